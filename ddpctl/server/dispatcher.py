"""The change dispatcher: one LISTEN connection per serving process.

It also hears ``NOTIFY ddpctl_control`` (operator commands) and passes it on.

It sleeps until PostgreSQL's ``NOTIFY ddpctl`` (or a one-second poll, so a lost NOTIFY
only delays), reads the changelog after its position (:mod:`ddpctl.livedata.changelog`), and hands
each batch to the observers that read the changed tables.  If the connection dies or
PostgreSQL restarts, it reconnects with backoff and catches up from where it was: nothing
is lost.  A batch that fails because a database connection broke (the database went away
mid-way) is retried whole; observers diff against what they sent, so a retry never
duplicates a message.  An observer whose query raises for any other reason (user code: a
bad annotation, a division by zero) ends its own subscriptions and the batch goes on to the
other observers (:meth:`ddpctl.livedata.observer.Observer.refresh`): one failing
publication never stalls the others.  Each observer sends the messages of a batch in
commit order (the order rules are in :mod:`ddpctl.livedata.observer`).

Observer refreshes run on the system lane (:mod:`.database_workers`), never behind user
code, ``concurrency`` at a time.

Why no committed change falls between an observer's first query and the changes it then
applies (the order Meteor's oplog driver and PostgreSQL's LISTEN documentation prescribe):

1. At start the dispatcher LISTENs, then takes its changelog position (the last committed
   change, plus the transactions still running, :meth:`ChangelogReader.at_end`), and only
   then is :attr:`Dispatcher.ready` set; the server accepts no connection before that.  So
   every change committed after any observer exists is after the position.
2. The reader's position never moves back, and it survives reconnects and PostgreSQL
   restarts: after one, the next read returns every change committed meanwhile.
3. An observer is registered (:data:`observers`) before it runs its first query, and stays
   registered while it has subscribers.  A change committed after that query's snapshot
   commits after the registration, so the read that returns it (now, or after a reconnect)
   happens after the registration too, and :meth:`ObserverRegistry.affected` finds the
   observer.  An observer still in its first query keeps the batch and applies it right
   after (``Observer.refresh``).  A change the first query already saw may be applied
   again: observers diff, so that sends nothing.

``sync()`` is the write fence: it returns once every change committed before the call
has been handed to the sessions, so a method's ``updated`` follows its data.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import gevent
import psycopg2
import psycopg2.extensions
from gevent.event import AsyncResult, Event
from gevent.pool import Pool
from gevent.socket import wait_read

from ..control import CONTROL_CHANNEL
from ..database_errors import is_connection_error
from ..livedata.capture import CHANNEL
from ..livedata.changelog import ChangelogReader, ChangeRow
from ..livedata.multiplex import BatchRefresh
from ..livedata.observer import ChangeSet, observers
from ..livedata.watchers import watchers

if TYPE_CHECKING:
    from .database_workers import DatabaseWorkers

__all__ = ["Dispatcher", "changes_of"]

logger = logging.getLogger(__name__)
POLL_INTERVAL = 1.0


def changes_of(rows: list[ChangeRow]) -> ChangeSet:
    """The changes of ``rows``, numbered in the order given (the changelog's commit order)."""
    changes = ChangeSet()
    for row in rows:
        changes.add(row.table, None if row.op == "T" else row.row)
    return changes


class Dispatcher:
    def __init__(self, dsn: dict[str, Any], db: DatabaseWorkers, concurrency: int,
                 on_control: Callable[[], None] | None = None) -> None:
        self._dsn = dsn
        self._on_control = on_control
        self._db = db
        self._pool = Pool(concurrency)
        self._wake = Event()
        self._waiters: list[AsyncResult] = []
        self._conn: Any = None
        self.reader: ChangelogReader | None = None
        self.ready = Event()  # set once the reader has its position: then connections may come
        self.batches = 0
        self.changes = 0
        self.reconnects = 0  # times the LISTEN connection was lost (and reconnected, or retrying)
        # Lag (lag()): 0 while idle on a live connection (no NOTIFY: nothing committed);
        # else seconds since _seen_until, the moment up to which every commit was dispatched.
        self._idle = False
        self._seen_until = time.monotonic()
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=2)
        self._close()

    @property
    def connected(self) -> bool:
        """Whether the LISTEN connection is up (False from its loss until it reconnects)."""
        return self._conn is not None

    def lag(self, now: float | None = None) -> float:
        """Seconds the dispatcher is behind the newest commit, at most: 0 while it waits on a
        live LISTEN connection (every commit sends a NOTIFY, so nothing is pending), else the
        time since the last moment up to which every commit had been handed to the observers
        (it is reading or dispatching a batch, catching up, or disconnected)."""
        if self._idle and self._conn is not None:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - self._seen_until)

    def sync(self, timeout: float = 10.0) -> bool:
        """Wait until changes committed before now have reached the sessions."""
        waiter: AsyncResult = AsyncResult()
        self._waiters.append(waiter)
        self._wake.set()
        try:
            waiter.get(timeout=timeout)
            return True
        except gevent.Timeout:
            logger.warning("write fence: changes were not dispatched within %.0f s", timeout)
            return False

    # -- the loop -----------------------------------------------------------------------

    def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                self._connect()
                delay = 0.1
                self._loop()
            except Exception as exc:  # psycopg2's, Django's (from observers) or socket errors
                self._idle = False
                if self._conn is not None:
                    self.reconnects += 1
                self._close()
                logger.warning("change dispatcher: %s: %s; reconnecting in %.1f s", type(exc).__name__,
                               str(exc).strip(), delay, exc_info=logger.isEnabledFor(logging.DEBUG))
                gevent.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _connect(self) -> None:
        conn = psycopg2.connect(**{**self._dsn, "application_name": "ddpctl-dispatcher"})
        conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
        with conn.cursor() as cur:
            cur.execute(f"LISTEN {CHANNEL}; LISTEN {CONTROL_CHANNEL}")
            if self.reader is None:
                self.reader = ChangelogReader.at_end(cur)
                logger.info("change dispatcher listening from position %d (%d transaction(s) in flight)",
                            self.reader.position, len(self.reader.in_flight))
            else:
                logger.info("change dispatcher reconnected; catching up from position %d",
                            self.reader.position)
        self._conn = conn
        self.ready.set()
        self._wake.set()  # read right away: changes may have committed while we were away

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg2.Error:
                logger.debug("closing a broken dispatcher connection failed", exc_info=True)

    def _loop(self) -> None:
        conn = self._conn
        assert self.reader is not None
        while True:
            if not self._wake.is_set() and not conn.notifies:
                # Wake on a NOTIFY, a sync() request or the poll timer, whichever comes first.
                # (A NOTIFY that came in while the last batch was read is already in
                # conn.notifies, its bytes consumed: waiting for the socket would miss it
                # until the poll timer, a second late.)
                waiter = gevent.spawn(wait_read, conn.fileno())
                self._idle = True
                try:
                    gevent.wait([waiter, self._wake], timeout=POLL_INTERVAL, count=1)
                finally:
                    self._idle = False
                self._seen_until = time.monotonic()  # no NOTIFY came before now: all was dispatched
                if not waiter.dead:
                    waiter.kill()
                elif waiter.exception is not None:
                    raise waiter.exception
            self._wake.clear()
            conn.poll()
            if self._on_control is not None and any(n.channel == CONTROL_CHANNEL for n in conn.notifies):
                self._on_control()
            conn.notifies.clear()
            waiters, self._waiters = self._waiters, []
            self._read_and_dispatch(conn)
            for waiter in waiters:
                waiter.set(True)

    def _read_and_dispatch(self, conn: Any) -> None:
        assert self.reader is not None
        while True:
            saved = replace(self.reader)
            taken_at = time.monotonic()
            with conn.cursor() as cur:
                # The batch is read in a snapshot that stays exported while observers apply
                # it: they read its rows as of that snapshot (see ChangeSet.snapshot).
                # BEGIN, the read and the export in one round trip (the NOTIFY-to-client
                # path pays each one per batch).
                try:
                    snapshot, rows = self.reader.read_exported(cur)
                    if rows:
                        self._dispatch(rows, snapshot, taken_at)
                except Exception:
                    # Keep the batch: move the reader back so it is read and dispatched again.
                    self.reader = saved
                    with contextlib.suppress(psycopg2.Error):  # the error above is what counts
                        cur.execute("ROLLBACK")
                    raise
                cur.execute("ROLLBACK")  # ends the read-only transaction, and the export
            if len(rows) < self.reader.batch_size:
                self._seen_until = taken_at  # what committed before the read is dispatched
                return

    def _dispatch(self, rows: list[ChangeRow], snapshot: str | None = None, taken_at: float = 0.0) -> None:
        # Observers raise only database connection errors (they end themselves on any other):
        # those make the caller retry the whole batch.
        changes = changes_of(rows)
        changes.snapshot, changes.taken_at = snapshot, taken_at
        self.batches += 1
        self.changes += len(rows)
        self._notify_watchers(rows)
        affected = observers.affected(changes)
        if not affected:
            return
        started = time.monotonic()
        refresh = BatchRefresh(changes, affected)
        refresh.run(self._run_jobs)
        logger.debug("dispatched %d change(s) to %d observer(s) (%d multiplexed) in %.1f ms", len(rows),
                     len(affected), len(refresh.multiplexed), (time.monotonic() - started) * 1000)

    def _notify_watchers(self, rows: list[ChangeRow]) -> None:
        """Table watchers (:mod:`ddpctl.livedata.watchers`), on the system lane.  A watcher's
        database connection error retries the batch; any other error is logged."""
        for watcher, mine in watchers.matching(rows):
            try:
                self._db.run(watcher.callback, mine)
            except Exception as exc:
                if is_connection_error(exc):
                    raise
                logger.exception("table watcher %r failed on %d change(s)", watcher.name, len(mine))

    def _run_jobs(self, jobs: Sequence[Callable[[], None]]) -> None:
        """Run ``jobs`` on the system lane, ``concurrency`` at a time; raise the first error."""
        spawned = [self._pool.spawn(self._db.run, job) for job in jobs]
        gevent.joinall(spawned)
        failed = [job.exception for job in spawned if job.exception is not None]
        if failed:
            raise failed[0]
