"""Telling a database connection problem from an error in the query itself.

Live data retries work that failed because the connection broke (the server restarted,
the network dropped, the connection was terminated): the same work succeeds once
reconnected.  An error caused by the query (a division by zero in an annotation, a bad
cast, a serializer raising) would fail again on every retry, so it is not retried.
"""
from __future__ import annotations

import django.db
import psycopg2

__all__ = ["is_connection_error", "RETRIED_SQLSTATE_CLASSES", "RETRIED_SQLSTATES"]

# SQLSTATE classes (first two characters; PostgreSQL's errcodes appendix) worth a retry:
# 08 connection exception, 53 insufficient resources (too many connections, out of
# memory), 40 transaction rollback (serialization failure, deadlock).
RETRIED_SQLSTATE_CLASSES = frozenset({"08", "53", "40"})
# 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now (starting up or
# shutting down), 57P04 database_dropped, 57P05 idle_session_timeout.
RETRIED_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05"})


def is_connection_error(exc: BaseException) -> bool:
    """True if ``exc`` means the database connection was unusable, not that the query was wrong.

    Looks through Django's wrappers (``django.db.OperationalError`` and friends keep
    psycopg2's error as ``__cause__``).  Connection errors are psycopg2's
    ``InterfaceError`` (the connection is closed) and ``OperationalError`` without a
    SQLSTATE (libpq lost the server: "server closed the connection unexpectedly", "could
    not connect") or with one of the SQLSTATEs above.  Anything else, including
    ``OperationalError``s such as a statement timeout (57014) or a lock timeout (55P03)
    that leave the connection usable, is an error of the query.
    """
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, psycopg2.InterfaceError):
            return True
        if isinstance(error, psycopg2.OperationalError):
            code = error.pgcode
            return code is None or code[:2] in RETRIED_SQLSTATE_CLASSES or code in RETRIED_SQLSTATES
        if isinstance(error, psycopg2.Error):
            return False
        error = error.__cause__ or error.__context__
    # Django raises its own InterfaceError ("connection already closed") with no psycopg2 cause.
    return isinstance(exc, django.db.InterfaceError)
