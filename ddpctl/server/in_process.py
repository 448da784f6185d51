"""A DDP connection served in the calling process, without sockets: what
:class:`ddpctl.testing.DDPCommunicator` drives (like Channels' ``WebsocketCommunicator``
drives a consumer).

The connection is the server's own :class:`.connection.DDPConnection` -- session, mergebox,
publications, observers, methods, login re-runs, flow control -- over a
:class:`MemoryTransport` that records what it writes.  Its greenlets run on the calling
thread's gevent hub, without monkey-patching: a database query blocks the thread, so no
other greenlet runs during one.  :class:`InProcessServer` stands in for
:class:`.runner.DDPServer`:

* the user and system lanes are the calling thread's own Django connection
  (:class:`InlineDatabase`): inside a test's transaction (pytest-django's ``db``), every
  publication and method sees the test's uncommitted writes, and each piece of work runs in
  a savepoint, as it would run in a transaction of its own on a server;
* the change dispatcher (:class:`InProcessDispatcher`) reads the changelog on that same
  connection when asked (:meth:`InProcessDispatcher.poll`), not on a LISTEN connection,
  and hands the changes to the observers through the server's own dispatch code.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import gevent

from ..config import REFRESH_CONCURRENCY, ServeConfig
from ..livedata.changelog import ChangelogReader
from .connection import DDPConnection
from .dispatcher import Dispatcher
from .websocket import ConnectionClosed

__all__ = ["InProcessServer", "InProcessConnection", "InlineDatabase", "InProcessDispatcher",
           "MemoryTransport"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


class InlineDatabase:
    """The database lanes of :class:`.runner.DDPServer` (``db`` and ``system_db``), run on
    the caller's own Django connection.  Inside a transaction each call runs in a savepoint,
    rolled back if it raises or if it caught a database error of its own (an observer whose
    query failed ends its subscriptions and returns), so the enclosing transaction goes on."""

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        yield

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        from django.db import DatabaseError, connection, transaction

        if not connection.in_atomic_block:
            return fn(*args)
        savepoint = transaction.savepoint()
        try:
            result = fn(*args)
        except BaseException:
            transaction.savepoint_rollback(savepoint)
            raise
        try:
            transaction.savepoint_commit(savepoint)
        except DatabaseError:
            logger.debug("rolling back a savepoint whose work left the transaction aborted")
            transaction.savepoint_rollback(savepoint)
        return result


class InProcessDispatcher(Dispatcher):
    """The change dispatcher, reading the changelog on the caller's Django connection when
    :meth:`poll` (or the write fence, :meth:`sync`) asks, instead of on NOTIFY."""

    def __init__(self, db: InlineDatabase) -> None:
        super().__init__({}, db, REFRESH_CONCURRENCY)  # type: ignore[arg-type]
        self._dispatched: set[int] = set()  # changelog ids handed to the observers

    def start(self) -> None:
        """Take the changelog position: changes committed (or written in the caller's
        transaction) from now on are dispatched."""
        from django.db import connection

        with connection.cursor() as cursor:
            self.reader = ChangelogReader.at_end(cursor)
        self.ready.set()

    def stop(self) -> None:
        pass

    def sync(self, timeout: float = 10.0) -> bool:
        """The write fence: every change visible now reaches the sessions before this returns."""
        self.poll()
        return True

    def poll(self) -> int:
        """Read the changes visible now and dispatch them to the observers; how many.

        Inside the caller's transaction its own uncommitted changes are visible; the reader
        returns them again while that transaction runs (to the reader it is in flight), and
        each is dispatched once."""
        from django.db import connection

        if self.reader is None:
            self.start()
        assert self.reader is not None
        total = 0
        while True:
            position = self.reader.position
            with connection.cursor() as cursor:
                rows = self.reader.read(cursor)
            fresh = [row for row in rows if row.id not in self._dispatched]
            if fresh:
                self._dispatched.update(row.id for row in fresh)
                self._db.run(self._dispatch, fresh)
            total += len(fresh)
            # More to read while the batch above the position was full (rows read again
            # below it, however many, do not count).
            if sum(row.id > position for row in rows) < self.reader.batch_size:
                return total


class MemoryTransport:
    """A transport that records the texts the connection writes (``on_send`` gets each)."""

    kind = "in-process"
    heartbeats = False

    def __init__(self, on_send: Callable[[str], None]) -> None:
        self._on_send = on_send
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.sent_at = time.monotonic()

    def open(self) -> None:
        pass

    def receive(self) -> list[str | bytes]:
        raise ConnectionClosed(1000, "in-process transport: frames are handed to the connection")

    def send(self, texts: list[str]) -> None:
        if self.closed:
            raise ConnectionClosed(1006, "closed")
        for text in texts:
            self._on_send(text)
        self.sent_at = time.monotonic()

    def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed, self.close_code, self.close_reason = True, code, reason

    def abort(self) -> None:
        self.close(1006, "aborted")

    def send_heartbeat(self) -> None:
        pass


class InProcessServer:
    """What a :class:`.connection.DDPConnection` needs of its server, in this process."""

    def __init__(self, config: ServeConfig | None = None) -> None:
        self.config = config or ServeConfig()
        self.connections: set[DDPConnection] = set()
        self.db = self.system_db = InlineDatabase()
        self.dispatcher = InProcessDispatcher(self.db)


class InProcessConnection:
    """One :class:`.connection.DDPConnection` driven by hand: :meth:`receive` hands it a
    frame, :meth:`run_until_idle` lets its greenlets work until nothing is left to do."""

    def __init__(self, server: InProcessServer, on_send: Callable[[str], None], *,
                 environ: Mapping[str, Any] | None = None, user_id: Any = None) -> None:
        self.server = server
        self.transport = MemoryTransport(on_send)
        environ = {"REMOTE_ADDR": "127.0.0.1", **(environ or {})}
        self.connection = DDPConnection(server, self.transport, environ)  # type: ignore[arg-type]
        self.connection.user_id = user_id
        server.connections.add(self.connection)
        self.connection._open()
        self._finished = False

    @property
    def closed(self) -> bool:
        return self.transport.closed

    def receive(self, text: str | bytes) -> None:
        """A frame from the client, as the connection's reader hands it on."""
        if self.transport.closed:
            raise ConnectionClosed(self.transport.close_code or 1006, "the connection is closed")
        self.connection._handle_texts([text])

    def change_user(self, user_id: Any) -> None:
        """Log the connection in as ``user_id`` (``None``: out), as a login method does:
        every subscription runs again and the client gets the differences."""
        conn = self.connection
        conn._tasks.append(lambda: conn._change_user(user_id))
        conn._start_processor()

    def idle(self) -> bool:
        """Nothing to process and nothing left to write."""
        conn = self.connection
        return (conn._processor is None and not conn._tasks and not conn._inbox and not conn._outbox
                and (conn._writer is None or conn._parked is not None))

    def run_until_idle(self, timeout: float = 10.0) -> None:
        """Run the hub until :meth:`idle` (``TimeoutError`` after ``timeout`` seconds: work
        that waits on something that never comes)."""
        deadline = time.monotonic() + timeout
        gevent.sleep(0)
        while not self.idle():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the in-process connection was still busy after {timeout} s")
            gevent.sleep(0.001)

    def close(self, timeout: float = 10.0) -> None:
        """Close the connection (its queued messages first) and clean up as the server does
        when a client leaves: subscriptions stopped, ``on_close`` callbacks run."""
        if self._finished:
            return
        self._finished = True
        self.connection.close(1000, "Normal closure")
        try:
            self.run_until_idle(timeout)
        finally:
            self.connection._finish()
