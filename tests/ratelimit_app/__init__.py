"""A test-only app for the rate limit tests: a rule added from ``ddp.py``, a method that
counts its runs, and a stand-in ``login`` when no accounts app provides one."""
