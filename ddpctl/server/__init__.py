"""The gevent server: the only package that imports gevent.

Import :mod:`ddpctl.server.gevent_patch` and call ``patch()`` before anything imports
``socket``, ``ssl``, ``threading`` or psycopg2 (the ``ddpctl serve`` entry point does).
"""
