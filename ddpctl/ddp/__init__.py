"""The DDP protocol core: pure functions and state machines, no I/O.

Nothing in this package imports sockets, gevent or Django, so every piece is tested
with plain calls (see ``tests/test_ddp_*.py``).
"""
