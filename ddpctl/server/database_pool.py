"""The user lane's database connections: a bounded pool, leased to a greenlet on first use.

User code -- DDP methods, publication starts (their first queries), stop callbacks, login
re-runs, Django views -- runs on its caller's own greenlet (a DDP connection's processor,
an HTTP connection's greenlet).  Django keeps one database connection per greenlet; inside
:meth:`DatabasePool.lease` that greenlet's ``default`` connection comes from this pool:

* a connection is taken only when the code first sends a query, so a method that sleeps
  or calls a web service without querying holds none, and any number of such methods run
  at once.  This holds inside ``transaction.atomic()`` too (every DDP method runs in one):
  entering or leaving a transaction that has sent nothing needs no connection, and a
  connection taken inside one starts its transaction with its first query (psycopg2
  sends ``BEGIN`` lazily), with Django's transaction state -- atomic blocks, savepoints,
  ``on_commit`` callbacks -- kept across the late connect;
* at most ``size`` connections are ever open for user code (leased plus idle); a greenlet
  that needs one while all ``size`` are leased waits, cooperatively, for one to come back;
* when the lease ends the connection goes back to the pool -- its transaction rolled back
  if user code left one open, dropped if it broke -- ready for the next call, so a call
  does not pay for a new PostgreSQL connection (a connect costs several milliseconds).
  A pooled connection whose socket has something to read while idle (EOF, or the error
  PostgreSQL sends as it shuts down or kills the backend: one non-blocking ``select``) is
  checked with ``SELECT 1`` before reuse and dropped if dead, so a call after a
  PostgreSQL restart gets a fresh connection.  ``CONN_HEALTH_CHECKS`` (Django's setting)
  adds the same check for a connection idle a second or more, or after another one was
  found broken.

Session state that user code sets with ``SET`` stays on the pooled connection, as with
Django's own connection pool (psycopg 3).  Only the ``default`` database is pooled.

The system lane (:mod:`.database_workers`) has connections of its own that user code
never occupies: change delivery, the registry heartbeat and operator commands never wait
behind user code.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import select
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg2
import psycopg2.extensions
from gevent.lock import Semaphore

__all__ = ["DatabasePool"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
_HEALTH_CHECK_AFTER = 1.0  # seconds idle in the pool after which CONN_HEALTH_CHECKS pings
# DatabaseWrapper attributes that Django's connect() resets and a late connect must keep.
_TRANSACTION_STATE = ("in_atomic_block", "savepoint_ids", "atomic_blocks", "needs_rollback",
                      "commit_on_exit", "run_on_commit")
_REUSABLE = (psycopg2.extensions.TRANSACTION_STATUS_IDLE,
             psycopg2.extensions.TRANSACTION_STATUS_INTRANS,
             psycopg2.extensions.TRANSACTION_STATUS_INERROR)


class DatabasePool:
    """At most ``size`` PostgreSQL connections for user code, reused across greenlets."""

    def __init__(self, size: int, alias: str = "default") -> None:
        self.size = size
        self.alias = alias
        self._slots = Semaphore(size)  # one per connection that is leased, idle or not yet opened
        self._idle: list[tuple[Any, Any, float]] = []  # (psycopg2 connection, isolation level, since)
        self._closed = False
        self.leased = 0

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def waiting(self) -> int:
        """Greenlets waiting for a connection (all ``size`` are leased)."""
        return self._slots.linkcount()

    # -- leases -------------------------------------------------------------------------

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        """Within: the calling greenlet's database connection comes from this pool (taken
        at its first query) and goes back when the outermost lease ends.  Re-entrant."""
        from django.db import connections

        wrapper = connections[self.alias]
        if getattr(wrapper, "_ddpctl_pool", None) is not self:
            self._adopt(wrapper)
        wrapper._ddpctl_leases += 1
        try:
            yield
        finally:
            wrapper._ddpctl_leases -= 1
            if wrapper._ddpctl_leases == 0:
                self._release(wrapper)

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on this greenlet within a lease; its result or its exception."""
        with self.lease():
            return fn(*args)

    def close(self) -> None:
        """Close the idle connections; connections still leased are closed when returned."""
        self._closed = True
        idle, self._idle = self._idle, []
        for raw, _level, _since in idle:
            _close_quietly(raw)

    # -- Django's DatabaseWrapper, per greenlet -----------------------------------------

    def _adopt(self, wrapper: Any) -> None:
        """Route this greenlet's connect and close through the pool, connecting late."""
        if wrapper.connection is not None:
            wrapper.close()  # opened outside the pool (not counted): Django closes it
        wrapper.connect = functools.partial(_connect_late, wrapper)
        wrapper.get_autocommit = functools.partial(_get_autocommit, wrapper)
        wrapper.set_autocommit = functools.partial(_set_autocommit, wrapper)
        wrapper.get_new_connection = functools.partial(self._checkout, wrapper)
        wrapper._close = functools.partial(self._checkin, wrapper)
        wrapper.autocommit = wrapper.settings_dict["AUTOCOMMIT"]  # what a connect will set
        wrapper._ddpctl_pool = self
        wrapper._ddpctl_leases = 0

    def _release(self, wrapper: Any) -> None:
        if wrapper.in_atomic_block:
            logger.error("user code left a transaction open on %r; rolling it back", self.alias)
        if wrapper.connection is not None:
            wrapper.close()  # -> _checkin
            wrapper.connection = None  # even if it was closed inside a transaction
        if wrapper.in_atomic_block:  # forget the abandoned transaction, as connect() would
            wrapper.in_atomic_block, wrapper.needs_rollback = False, False
            wrapper.savepoint_ids, wrapper.atomic_blocks, wrapper.run_on_commit = [], [], []
        wrapper.autocommit = wrapper.settings_dict["AUTOCOMMIT"]

    def _checkout(self, wrapper: Any, conn_params: dict[str, Any]) -> Any:
        """Django's ``get_new_connection``: an idle pooled connection, else a new one."""
        self._slots.acquire()
        try:
            raw = self._reuse(wrapper)
            if raw is None:
                raw = type(wrapper).get_new_connection(wrapper, conn_params)
        except BaseException:
            self._slots.release()
            raise
        self.leased += 1
        return raw

    def _reuse(self, wrapper: Any) -> Any:
        check = wrapper.settings_dict.get("CONN_HEALTH_CHECKS", False)
        while self._idle:
            raw, level, since = self._idle.pop()  # the most recently used: warm, likely alive
            if raw.closed:
                continue
            suspect = _readable(raw) or (check and time.monotonic() - since >= _HEALTH_CHECK_AFTER)
            if suspect and not _alive(raw):
                logger.info("dropping a pooled database connection that failed its health check")
                _close_quietly(raw)
                continue
            wrapper.isolation_level = level  # what get_new_connection would have set
            return raw
        return None

    def _checkin(self, wrapper: Any) -> None:
        """Django's ``_close``: give the connection back instead of closing it."""
        raw = wrapper.connection
        try:
            if raw.closed:
                # It broke (PostgreSQL restarted, a failover, a killed backend): the idle
                # ones may have too, so each is checked before its next use.
                self._idle = [(other, level, -math.inf) for other, level, _since in self._idle]
            keep = not self._closed and not wrapper.in_atomic_block and _reset(raw)
            if keep:
                self._idle.append((raw, wrapper.isolation_level, time.monotonic()))
            else:
                _close_quietly(raw)
        finally:
            self.leased -= 1
            self._slots.release()


# -- connecting late: instance overrides of Django's DatabaseWrapper ----------------------

def _connect_late(wrapper: Any) -> None:
    """Django's ``connect()``, keeping the transaction state built before it."""
    autocommit = wrapper.autocommit
    saved = [getattr(wrapper, name) for name in _TRANSACTION_STATE]
    try:
        type(wrapper).connect(wrapper)
    finally:
        for name, value in zip(_TRANSACTION_STATE, saved, strict=True):
            setattr(wrapper, name, value)
    if autocommit != wrapper.autocommit:
        wrapper._set_autocommit(autocommit)  # a flag: BEGIN goes out with the first query
        wrapper.autocommit = autocommit


def _get_autocommit(wrapper: Any) -> bool:
    if wrapper.connection is None:
        return wrapper.autocommit  # no need to connect just to tell
    return type(wrapper).get_autocommit(wrapper)


def _set_autocommit(wrapper: Any, autocommit: bool,
                    force_begin_transaction_with_broken_autocommit: bool = False) -> None:
    if wrapper.connection is not None:
        type(wrapper).set_autocommit(wrapper, autocommit, force_begin_transaction_with_broken_autocommit)
        return
    # Not connected: record the mode for the connect; as Django's set_autocommit otherwise.
    wrapper.validate_no_atomic_block()
    wrapper.autocommit = autocommit
    if autocommit and wrapper.run_commit_hooks_on_set_autocommit_on:
        wrapper.run_and_clear_commit_hooks()
        wrapper.run_commit_hooks_on_set_autocommit_on = False


# -- pooled connections ------------------------------------------------------------------

def _reset(raw: Any) -> bool:
    """Make ``raw`` ready for the next lease; False if it must be closed instead."""
    if raw.closed:
        return False
    status = raw.info.transaction_status
    if status not in _REUSABLE:
        return False  # a query was interrupted (ACTIVE) or the connection broke (UNKNOWN)
    if status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        logger.warning("rolling back a transaction that user code left open (autocommit off)")
        try:
            raw.rollback()
        except psycopg2.Error as exc:
            logger.warning("rolling back a pooled database connection failed (%s); closing it", exc)
            return False
    return True


def _readable(raw: Any) -> bool:
    """True if an idle connection's socket has something to read: an idle PostgreSQL
    connection has nothing to say, so that is EOF or an error (a restart's "terminating
    connection due to administrator command", a killed backend).  One non-blocking
    ``select``, no round trip."""
    try:
        readable, _, _ = select.select([raw.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg2.Error):
        return True
    return bool(readable)


def _alive(raw: Any) -> bool:
    try:
        with raw.cursor() as cursor:
            cursor.execute("SELECT 1")
        if raw.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            raw.rollback()  # the connection was left out of autocommit
        return True
    except psycopg2.Error:
        return False


def _close_quietly(raw: Any) -> None:
    try:
        raw.close()
    except psycopg2.Error as exc:
        logger.debug("closing a database connection failed: %s", exc)
