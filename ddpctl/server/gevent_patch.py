"""Make the standard library and psycopg2 cooperative under gevent."""
from __future__ import annotations

_patched = False


def patch() -> None:
    """Monkey-patch once; must run before socket, ssl, threading or psycopg2 are used."""
    global _patched
    if _patched:
        return
    from gevent import monkey

    monkey.patch_all()
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()  # psycopg2 waits on the gevent hub instead of blocking the process
    _patched = True
