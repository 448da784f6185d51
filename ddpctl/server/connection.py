"""One DDP client connection: transport, session, send buffer with flow control, heartbeats.

The reader answers pings at once and queues
``sub``/``unsub``/``method``; a processor greenlet handles those in arrival order and runs
their user code itself, leasing a database connection from the server's user lane
(:mod:`.database_pool`) only while that code uses one.  A slow method therefore delays
this connection's later messages (Meteor's in-order semantics) and nothing else; the
system lane (change delivery, registry heartbeat, operator commands) has connections of
its own.  A writer greenlet drains the send queue, batching frames; data queued while it is
not at work is written by one process-wide greenlet with non-blocking sends
(:class:`_DirectWrites`), the writer finishing what the socket did not take.  Processor and
writer exist only while they have work; so does the reader of a WebSocket without TLS
(:meth:`DDPConnection.serve_watched`: an io watcher on the socket spawns it when bytes
arrive), so an idle connection has no greenlet at all.  Over TLS the HTTP connection's
greenlet stays the reader (an SSL socket may hold decrypted bytes while its file descriptor
is not readable).  The server's heartbeat loop calls :meth:`DDPConnection.tick`.

Input is bounded: once ``receive_queue_size`` messages or ``receive_queue_bytes`` bytes of
frames wait for the processor, the reader stops reading the socket until it catches up, so
TCP pushes back on the client.  Output is encoded message by message before it is queued:
a message that cannot be encoded is dropped alone (a method result or a ``nosub`` error
becomes ``500 Internal server error``), never the batch it would have been written with.

Flow control counts bytes (UTF-8 text queued plus what the writer is writing):

* Work done for this client on its processor greenlet -- a new subscription's documents,
  re-running subscriptions at login, a replay, method results -- waits while the buffer
  holds more than a high-water mark, so any size of result streams in bounded memory to a
  client that reads.  Observers hand a new subscriber a snapshot of their documents
  (:meth:`Subscription.welcome`); the processor sends it, then the changes that arrived
  meanwhile, in order.
* Live changes fanned out by the shared observers never wait.  A client whose buffer
  passes ``send_buffer_limit``, or that has data buffered and took none of it for
  ``send_timeout`` seconds (a writer blocked in ``send`` included), is closed with 1008
  (``send buffer limit exceeded`` / ``send timeout``) after the frame being written; its
  buffer is dropped at once, and the socket is cut if even the close frame stalls.
"""
from __future__ import annotations

import datetime
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from itertools import islice
from typing import TYPE_CHECKING, Any, Protocol

import gevent
from gevent.event import Event
from gevent.hub import Waiter, get_hub

from ..connection_hooks import connection_hooks
from ..ddp.errors import MeteorError, internal_server_error
from ..ddp.heartbeat import Beat, Heartbeat
from ..ddp.messages import EncodeError, stringify
from ..ddp.session import (
    Close,
    Enqueue,
    MethodCall,
    Send,
    Session,
    SubscriptionStart,
    SubscriptionStop,
)
from ..invocation import ConnectionHandle, MethodInvocation
from ..livedata.publish import AddedTexts, Documents, PreparedMessage, Subscription, publications, utf8_size
from ..methods import methods
from ..ratelimit import Event as RateLimitEvent
from ..ratelimit import rate_limit
from ..redaction import redact_message
from ..registry import ConnectionEntry, SubscriptionEntry
from ..session_login import session_login_enabled, session_login_listeners, session_user_id
from . import sockjs
from .memory import release_free_memory
from .stats import counters, method_done, publication_started
from .websocket import MESSAGE_TOO_BIG, ConnectionClosed, WebSocket

if TYPE_CHECKING:
    from .runner import DDPServer

__all__ = ["DDPConnection", "RawTransport", "SockJSTransport"]

logger = logging.getLogger(__name__)
_BATCH = 256  # frames taken from the send queue per socket write, at most
_BATCH_BYTES = 256 << 10  # ... and bytes: bounds what a close waits for and a write holds
_HIGH_WATER = 1 << 20  # bytes buffered above which own work waits (or a quarter of the limit)
_TRIM_AFTER = 4 << 20  # dropping this many buffered bytes gives the freed memory back to the OS
_DATA_MESSAGES = frozenset(("added", "changed", "removed"))
_WRITER_LINGER = 1.0  # seconds an idle writer greenlet stays parked before tick() ends it
_READER_LINGER = 1.0  # ... and an idle watched reader (serve_watched)
_RETIRE = object()  # wakes a parked writer to end it (unless something was queued meanwhile)
_PAUSE_CHECK = 1.0  # seconds between checks that a paused reader's connection still lives
_YIELD_EVERY = 64  # messages of one SockJS frame handled before the reader yields
_WELCOME_BATCH_BYTES = 64 << 10  # a welcome's documents are queued in items of about this size
_WELCOME_CHUNK = 256  # documents the mergebox takes at a time in a welcome


class Transport(Protocol):
    """What a DDP connection runs over: a WebSocket here, or a SockJS session of HTTP
    requests (:class:`.sockjs_session.SockJSSession`)."""

    kind: str  # as ``ddpctl conns ls`` shows it: websocket, sockjs, sockjs/xhr-streaming, ...
    heartbeats: bool  # send_heartbeat sends something (SockJS ``h`` every --sockjs-heartbeat)

    def open(self) -> None: ...
    def receive(self) -> list[str | bytes]: ...
    def send(self, texts: list[str]) -> None: ...
    def close(self, code: int, reason: str) -> None: ...
    def abort(self) -> None: ...
    def send_heartbeat(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def sent_at(self) -> float: ...


class RawTransport:
    """DDP messages as plain WebSocket text messages (``/websocket``)."""

    kind = "websocket"
    heartbeats = False

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    def open(self) -> None:
        pass

    def receive(self) -> list[str | bytes]:
        return [self.ws.receive()]

    def receive_ready(self) -> list[str | bytes] | None:
        """The next message if what the socket has holds one, without waiting; else ``None``."""
        message = self.ws.receive_ready()
        return None if message is None else [message]

    def send(self, texts: list[str]) -> None:
        self.ws.send_many(texts)

    def send_nowait(self, texts: list[str]) -> int | None:
        """Optional in a transport: write ``texts`` without blocking; bytes left (written
        first by the next write or :meth:`flush`), or ``None`` if not possible now."""
        return self.ws.send_many_nowait(texts)

    def flush(self) -> None:
        """Write what :meth:`send_nowait` left (blocking)."""
        self.ws.flush()

    def close(self, code: int, reason: str) -> None:
        self.ws.close(code, reason)

    def abort(self) -> None:
        self.ws.abort()

    def send_heartbeat(self) -> None:
        """Raw WebSockets have no transport heartbeat (DDP pings do the job)."""

    @property
    def closed(self) -> bool:
        return self.ws.closed is not None

    @property
    def sent_at(self) -> float:
        """``time.monotonic()`` of the last socket write that moved bytes."""
        return self.ws.sent_at


class SockJSTransport(RawTransport):
    """DDP inside SockJS frames (``/sockjs/<server>/<session>/websocket``).

    ``max_message_size`` bounds each DDP message once unescaped (the WebSocket itself is
    given :func:`sockjs.frame_limit` of it); a bigger one closes with 1009.
    """

    kind = "sockjs"
    heartbeats = True

    def __init__(self, ws: WebSocket, max_message_size: int | None = None) -> None:
        super().__init__(ws)
        self.max_message_size = max_message_size

    def open(self) -> None:
        self.ws.send(sockjs.OPEN)

    def receive(self) -> list[str | bytes]:
        return self._decode(self.ws.receive())

    def receive_ready(self) -> list[str | bytes] | None:
        frame = self.ws.receive_ready()
        return None if frame is None else self._decode(frame)

    def _decode(self, frame: str | bytes) -> list[str | bytes]:
        try:
            return list(sockjs.decode_client_frame(frame, self.max_message_size))
        except sockjs.MessageTooBig as exc:
            logger.warning("closing a SockJS connection: %s", exc)
            self.close(MESSAGE_TOO_BIG, "Message too big")
            raise ConnectionClosed(MESSAGE_TOO_BIG, "Message too big") from None
        except ValueError:
            self.close(3000, "Broken framing.")
            raise ConnectionClosed(3000, "Broken framing.") from None

    def send(self, texts: list[str]) -> None:
        self.ws.send(sockjs.messages_frame(texts))

    def send_nowait(self, texts: list[str]) -> int | None:
        return self.ws.send_many_nowait([sockjs.messages_frame(texts)])

    def send_heartbeat(self) -> None:
        self.ws.send(sockjs.HEARTBEAT)

    def close(self, code: int, reason: str) -> None:
        if not self.ws.closed:
            try:
                self.ws.send(sockjs.close_frame(code, reason))
            except ConnectionClosed:
                pass  # the peer went away first; the socket is already shut
        self.ws.close(code, reason)


class _TransportHeartbeat:
    """Queued like a message so that it never interleaves with a write in progress."""


_TRANSPORT_HEARTBEAT = _TransportHeartbeat()


class _CloseRequest:
    __slots__ = ("code", "reason", "size")

    def __init__(self, code: int, reason: str) -> None:
        self.code, self.reason = code, reason
        self.size = 4 + utf8_size(reason)  # counted: a close frame stuck in send is a stall too


class _Flush:
    """The ``size`` bytes of a direct write the socket did not take at once (the transport
    holds them and writes them before anything else): the writer's to finish."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


class _TextBatch:
    """Messages queued as one item (a welcome's documents), ``size`` bytes in UTF-8."""

    __slots__ = ("texts", "size")

    def __init__(self, texts: list[str], size: int) -> None:
        self.texts, self.size = texts, size


class _Welcome:
    """A new subscriber's documents still to send, and the changes that arrived meanwhile."""

    __slots__ = ("sub", "documents", "changes")

    def __init__(self, sub: Subscription, documents: Documents) -> None:
        self.sub, self.documents = sub, documents
        self.changes: deque[PreparedMessage] = deque()


class DDPConnection:
    def __init__(self, server: DDPServer, transport: Transport, environ: Mapping[str, Any]) -> None:
        self.server = server
        self.config = server.config
        self.transport = transport
        self.session = Session(has_method=methods.__contains__,
                               has_publication=publications.__contains__,
                               max_subscriptions=self.config.max_subscriptions,
                               max_params_size=self.config.max_params_size,
                               rate_limit=self._rate_limit)
        self.handle = ConnectionHandle(
            id="", client_address=environ.get("REMOTE_ADDR"),
            http_headers={k[5:].lower().replace("_", "-"): v for k, v in environ.items()
                          if k.startswith("HTTP_")},
            _close=lambda: self.close(1000, "Normal closure"))
        self.user_id: Any = None
        self.opened_at = time.time()
        self._opened_mono = time.monotonic()
        self._outbox: deque[Any] = deque()  # texts, _CloseRequest, _TRANSPORT_HEARTBEAT
        self._writer: gevent.Greenlet | None = None
        # Written without a writer greenlet while none is at work (see _DirectWrites); None
        # for transports that cannot write without blocking (SockJS over HTTP, tests').
        self._send_nowait: Callable[[list[str]], int | None] | None = getattr(transport, "send_nowait", None)
        self._direct_due = False  # in _direct_writes' list
        self._parked: Waiter | None = None  # the writer's, while it waits for more (no timer)
        self._parked_at = 0.0
        self._buffered = 0  # bytes queued for the writer or being written
        self._held = 0  # bytes of changes held back until a welcome's documents are sent
        self._in_flight = 0  # bytes of the batch the writer is writing
        self._pending_since = self._opened_mono  # when the buffer last went from empty to not
        self._close_queued = False  # nothing is queued after a close frame
        self._writable = Event()  # set while the buffer is below the low-water mark
        self._writable.set()
        self._high_water = min(_HIGH_WATER, self.config.send_buffer_limit // 4)
        self._low_water = self._high_water // 2
        # within the high-water mark, so a batch never crowds out live changes' room
        self._welcome_batch = max(1, min(_WELCOME_BATCH_BYTES, self._high_water // 4))
        self._tasks: deque[Callable[[], None]] = deque()  # own work, run before the next message
        self._welcoming: dict[str, _Welcome] = {}
        self._inbox: deque[tuple[dict[str, Any], int]] = deque()  # (message, frame bytes)
        self._inbox_bytes = 0
        self._inbox_room = Event()
        self._input_paused = False
        self._processor: gevent.Greenlet | None = None
        self._subs: dict[str, Subscription] = {}
        self._heartbeat: Heartbeat | None = None  # created at connect (pre1 has none)
        self._last_transport_beat = self._opened_mono
        self._closing = False
        self._mute_data = False
        self._watcher: Any = None  # serve_watched: the socket's io watcher, until the end
        self._reader: gevent.Greenlet | None = None  # ... and the greenlet reading, if any
        self._on_end: Callable[[], None] | None = None
        self._reader_parked: Waiter | None = None  # the reader's, while it waits for bytes
        self._reader_parked_at = 0.0
        self._read_dry_at = -_READER_LINGER  # when the reader last found the socket empty

    # -- lifecycle ----------------------------------------------------------------------

    def run(self) -> None:
        """Serve the client until it goes away or the connection is closed (blocking this
        greenlet in the transport's ``receive``)."""
        self.server.connections.add(self)
        try:
            self._open()
            self._read_loop()
        except ConnectionClosed:
            pass  # the client left; cleanup below is all there is to do
        finally:
            self._finish()

    def serve_watched(self, fileno: int, on_end: Callable[[], None]) -> None:
        """Serve a WebSocket transport without a greenlet of its own while the client is
        quiet: a reader greenlet reads what the socket has (``receive_ready``, never
        blocking in ``recv``), hands each message on as :meth:`run` does, and ends; a gevent
        io watcher on ``fileno`` spawns the next one when bytes arrive.  A busy client (bytes
        again within ``_READER_LINGER`` seconds) keeps its reader, waiting on the watcher
        (no spawn per message), until :meth:`tick` ends it after that long idle.  While the
        inbox is full nothing reads (TCP pushes back on the client) until the processor
        makes room.
        Returns once the reading is armed (or the connection ended); ``on_end`` runs after
        the cleanup (it closes the socket)."""
        self.server.connections.add(self)
        self._on_end = on_end
        try:
            self._open()
        except ConnectionClosed:
            self._finish()
            return
        self._watcher = get_hub().loop.io(fileno, 1)
        self._read_available()

    def _open(self) -> None:
        counters.connections_opened += 1
        self.transport.open()
        if self.config.legacy_server_id:
            self._queue_text('{"server_id":"0"}')

    def _finish(self) -> None:
        self._closing = True
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.close()
        try:
            writer = self._writer
            if writer is not None and not self.transport.closed:
                self._retire_writer(float("inf"))  # parked: nothing more comes, it ends now
                writer.join(timeout=self.config.shutdown_timeout)  # flush, then the close frame
            if self._writer is not None:
                self._writer.kill(block=False)
            self.transport.abort()
            self._drop_buffers()
            self._close_queued = True  # the client is gone: nothing more is queued
            # Like Meteor, a method already running is not interrupted when its client
            # leaves (killing it mid-way would leave half-done writes); queued ones are dropped.
            self._inbox.clear()
            processor = self._processor
            if processor is not None:
                processor.join()
            try:
                with self.server.db.lease():
                    for sub in list(self._subs.values()):
                        sub.deactivate()
                    self._subs.clear()
                    self.handle.run_close_callbacks()  # once, however the connection ended
            finally:
                self.server.connections.discard(self)
        finally:
            on_end, self._on_end = self._on_end, None
            if on_end is not None:
                on_end()

    def close(self, code: int = 1000, reason: str = "Normal closure") -> None:
        """Send what is queued, then close with ``code``."""
        if self._closing:
            return
        self._closing = True
        self._push_close(code, reason)

    # -- reading ------------------------------------------------------------------------

    def _read_loop(self) -> None:
        while not self._closing:
            self._wait_for_inbox_room()
            self._handle_texts(self.transport.receive())

    def _on_readable(self) -> None:
        """The io watcher's callback, on the hub: read on a greenlet of its own."""
        watcher = self._watcher
        if watcher is not None:
            watcher.stop()
            if self._reader is None:
                self._reader = gevent.spawn(self._read_available)

    def _resume_reading(self) -> None:
        """Watched reading paused on a full inbox: go on (on a new reader greenlet)."""
        if self._watcher is not None and self._reader is None:
            self._reader = gevent.spawn(self._read_available)

    def _read_available(self) -> None:
        """Watched reading (:meth:`serve_watched`): read and hand on what the socket has;
        then re-arm the watcher, or pause on a full inbox, or clean up once the client left."""
        self._reader = gevent.getcurrent()
        ended = True
        retiring = False
        try:
            receive_ready = self.transport.receive_ready  # type: ignore[attr-defined]
            while not self._closing:
                if self._inbox_full() and not self.transport.closed:
                    self._input_paused = True  # the processor resumes us as it makes room
                    ended = False
                    return
                self._input_paused = False
                texts = receive_ready()
                if texts is None:
                    watcher = self._watcher
                    now = time.monotonic()
                    # A busy client (its bytes came within _READER_LINGER of the last time
                    # the socket ran dry) keeps its reader, waiting on the watcher: no spawn
                    # per message; tick() ends it once idle that long.  A quiet one's ends now.
                    busy, self._read_dry_at = now - self._read_dry_at < _READER_LINGER, now
                    if retiring or not busy or watcher is None:
                        ended = watcher is None
                        if watcher is not None:
                            watcher.start(self._on_readable)
                        return
                    waiter = Waiter()
                    self._reader_parked, self._reader_parked_at = waiter, now
                    watcher.start(waiter.switch, None)
                    try:
                        retiring = waiter.get() is _RETIRE
                    finally:
                        self._reader_parked = None
                        watcher.stop()
                    continue
                retiring = False
                self._handle_texts(texts)
        except ConnectionClosed:
            pass  # the client left; cleanup below is all there is to do
        except Exception:
            logger.exception("connection %s: internal error reading", self.handle.id)
        finally:
            self._reader = None
            if ended:
                self._finish()

    def _handle_texts(self, texts: list[str | bytes]) -> None:
        counters.messages_received += len(texts)
        for i, text in enumerate(texts):
            # A SockJS frame may carry any number of messages: each one waits for room
            # in the inbox, and the reader yields now and then, so one client's frame
            # neither bypasses the input bound nor holds up the process.
            if i:
                self._wait_for_inbox_room()
                if i % _YIELD_EVERY == 0:
                    gevent.sleep(0)
            if self._heartbeat is not None:
                self._heartbeat.message_received()
            try:
                self._receive(text)
            except ConnectionClosed:
                raise
            except Exception:  # a bug, not a bad frame (the session answers those)
                logger.exception("connection %s: internal error handling a frame", self.handle.id)
            if self.session.connected and not self.handle.id:
                self.handle.id = self.session.id or ""
                if publications.universal_names(self.user_id is not None):  # before any later message
                    self._tasks.append(self._start_universal)
                    self._start_processor()
                if self.session.heartbeats:
                    self._heartbeat = Heartbeat(self.config.heartbeat_interval,
                                                self.config.heartbeat_timeout, now=time.monotonic())
                if connection_hooks or session_login_enabled():
                    # Before any later message of this client: tasks run first.
                    self._tasks.append(self._connected)
                    self._start_processor()

    def _receive(self, text: str | bytes) -> None:
        for item in self.session.receive(text):
            if isinstance(item, Send):
                self._send(item.message)
            elif isinstance(item, Enqueue):
                size = len(text)
                self._inbox.append((item.message, size))
                self._inbox_bytes += size
                self._start_processor()
            elif isinstance(item, Close):
                self.close(1000, "Normal closure")

    def _inbox_full(self) -> bool:
        return (len(self._inbox) >= self.config.receive_queue_size
                or self._inbox_bytes >= self.config.receive_queue_bytes)

    def _wait_for_inbox_room(self) -> None:
        """Stop reading while the processor is behind (TCP then pushes back on the client)."""
        while self._inbox_full() and not self.transport.closed:
            self._input_paused = True
            self._inbox_room.clear()
            self._inbox_room.wait(_PAUSE_CHECK)
        self._input_paused = False

    # -- processing, in order -----------------------------------------------------------

    def _start_processor(self) -> None:
        if self._processor is None:
            self._processor = gevent.spawn(self._process_loop)

    def _process_loop(self) -> None:
        try:
            while self._tasks or self._inbox:
                if self._tasks:
                    task, msg = self._tasks.popleft(), None
                else:
                    msg, size = self._inbox.popleft()
                    self._inbox_bytes -= size
                    if self._input_paused and not self._inbox_full():
                        self._inbox_room.set()
                        self._resume_reading()
                    task = None
                try:
                    if task is not None:
                        task()
                    else:
                        self._process(msg)
                except ConnectionClosed:
                    return  # the client is gone: nothing more to answer
                except Exception:  # a bug: log it and go on with the next message
                    logger.exception("connection %s: internal error processing %.200r",
                                     self.handle.id, redact_message(msg) if task is None else task)
        finally:
            self._processor = None

    def _run_tasks(self) -> None:
        while self._tasks:
            self._tasks.popleft()()

    def _process(self, msg: dict[str, Any]) -> None:
        processed = self.session.process(msg)
        self._send_all(processed.messages)
        work = processed.work
        if isinstance(work, MethodCall):
            self._run_method(work)
        elif isinstance(work, SubscriptionStart):
            self._start_subscription(work)
        elif isinstance(work, SubscriptionStop):
            sub = self._subs.pop(work.id, None)
            if sub is not None:
                self.server.db.run(sub.deactivate)

    def _rate_limit(self, kind: str, name: str) -> MeteorError | None:
        """Count this call in the process's rate limits; the refusal to send, if any."""
        return rate_limit.refusal(RateLimitEvent(kind, name, self.user_id, self.handle.id or None,
                                                 self.handle.client_address))

    def _connected(self) -> None:
        """On the processor, once the client is connected: the Django session's user
        (``DDPCTL_SESSION_LOGIN``), then the ``on_connection`` hooks, on the user lane."""
        if session_login_enabled():
            try:
                user_id = self.server.db.run(session_user_id, self.handle.http_headers.get("cookie"))
            except Exception:
                logger.exception("connection %s: Django session login failed; the connection "
                                 "stays logged out", self.handle.id)
            else:
                if user_id is not None:
                    if self._subs or publications.universal_names() != publications.universal_names(False):
                        self._change_user(user_id)  # user-only universal publications start too
                    else:
                        self.user_id = user_id
                    for listener in session_login_listeners:
                        listener(self.handle, user_id)
        if connection_hooks:
            self.server.db.run(connection_hooks.run, self.handle)

    def _run_method(self, call: MethodCall) -> None:
        invocation = MethodInvocation(call.name, self.handle, call.random_seed, self.user_id)
        started = time.monotonic()
        try:
            result = self.server.db.run(methods.invoke, call.name, call.params, invocation)
        except MeteorError as exc:
            self._write_fence()
            self._send_all(self.session.method_failed(call, exc))
            method_done(call.name, exc, time.monotonic() - started)
            return
        finally:
            if invocation.user_changed:
                self._change_user(invocation.user_id)
        self._write_fence()
        self._send_all(self.session.method_returned(call, result))  # 500 if not EJSON
        method_done(call.name, None, time.monotonic() - started)

    def _write_fence(self) -> None:
        """Before ``updated``: the data of the method's writes must be on its way."""
        if self._subs:
            self.server.dispatcher.sync()

    def _change_user(self, user_id: Any) -> None:
        """Re-run every subscription as ``user_id``; send the client only what differs."""
        self.user_id = user_id
        before = self.session.view.snapshot()
        self._mute_data = True
        try:
            running = set()
            for sub_id, sub in list(self._subs.items()):
                self.server.db.run(sub.deactivate)
                if user_id is None and sub_id in self.session.universal and publications.user_only(sub.name):
                    del self._subs[sub_id]  # logged out: it would publish nothing
                    self.session.subscription_stopped(sub_id)  # its documents go in the diff below
                    continue
                running.add(sub.name)
                self.session.forget_documents(sub_id)
                replacement = Subscription(self, sub_id, sub.name, sub.params, self.handle, user_id)
                self._subs[sub_id] = replacement
                self.server.db.run(publications.start, replacement)
                self._run_tasks()  # the new documents, into the mergebox only
            if user_id is not None and self.handle.id:
                for name in publications.universal_names():
                    if publications.user_only(name) and name not in running:
                        self._start_subscription(self.session.start_universal(name))
                        self._run_tasks()
        finally:
            self._mute_data = False
        self._send_all(self.session.view.diff(before))

    def _start_universal(self) -> None:
        """Meteor's ``Meteor.publish(null, ...)``: every universal publication, at connect
        (the ``user_only`` ones only if the connection already has a user)."""
        for name in publications.universal_names(self.user_id is not None):
            self._start_subscription(self.session.start_universal(name))

    def _start_subscription(self, start: SubscriptionStart) -> None:
        sub = Subscription(self, start.id, start.name, start.params, self.handle, self.user_id)
        self._subs[start.id] = sub
        started = time.monotonic()
        self.server.db.run(publications.start, sub)
        publication_started(start.name, time.monotonic() - started)

    # SubscriptionSink: a publication's output goes through this session's mergebox.

    def sub_added(self, sub_id: str, collection: str, doc_id: str, fields: Mapping[str, Any]) -> None:
        self._send_all(self.session.subscription_added(sub_id, collection, doc_id, fields))

    def sub_changed(self, sub_id: str, collection: str, doc_id: str,
                    fields: Mapping[str, Any] | None, cleared: Iterable[str]) -> None:
        self._send_all(self.session.subscription_changed(sub_id, collection, doc_id, fields, cleared))

    def sub_removed(self, sub_id: str, collection: str, doc_id: str) -> None:
        self._send_all(self.session.subscription_removed(sub_id, collection, doc_id))

    def sub_welcome(self, sub: Subscription, documents: Documents) -> None:
        # Called on an observer's greenlet: only note the work; the processor does it.
        welcome = _Welcome(sub, documents)
        self._welcoming[sub.id] = welcome
        self._tasks.append(lambda: self._send_welcome(welcome))
        self._start_processor()

    def _send_welcome(self, welcome: _Welcome) -> None:
        """On the processor: the documents, ``ready``, then the changes since, with backpressure."""
        sub = welcome.sub
        try:
            for entry in welcome.documents:
                name, docs = entry
                if not self._send_documents(sub, name, docs, getattr(entry, "texts", None)):
                    return
            if sub.active:
                self.sub_ready(sub.id)
            changes = welcome.changes
            while changes and sub.active and not self._close_queued:
                message = changes.popleft()
                self._held -= message.size
                self._deliver_prepared(sub.id, message)
        finally:
            if self._welcoming.get(sub.id) is welcome:
                del self._welcoming[sub.id]
            for message in welcome.changes:  # left over if it ended early
                self._held -= message.size
            welcome.changes.clear()

    def _send_documents(self, sub: Subscription, name: str, docs: Mapping[str, Mapping[str, Any]],
                        texts: AddedTexts | None) -> bool:
        """A welcome's documents of one collection through the mergebox, queued in batches of
        about :data:`_WELCOME_BATCH_BYTES` (one queue operation each, not one per document;
        a quarter of the high-water mark at most).  With ``texts`` (an observer's documents,
        whose fields never change), the mergebox takes them :data:`_WELCOME_CHUNK` at a time
        without copying (:meth:`~ddpctl.ddp.mergebox.SessionView.added_many`) and an
        ``added`` it lets through whole takes its text from ``texts``, encoded once for every
        subscriber of the observer.  False if the subscription or the connection ended
        meanwhile."""
        if not sub.active or self._close_queued:
            return False
        limit = self._welcome_batch
        batch: list[str] = []
        size = 0
        items = iter(docs.items())
        while chunk := list(islice(items, _WELCOME_CHUNK)):
            if texts is not None:
                outs = self.session.subscription_added_many(sub.id, name, chunk)
            else:
                added = self.session.subscription_added
                outs = [added(sub.id, name, doc_id, fields) for doc_id, fields in chunk]
            if self._mute_data:
                continue  # a user change is re-running subscriptions; the diff follows
            # What the mergebox took is queued whole (a removal may follow), then the
            # subscription and the connection are checked.
            for (doc_id, fields), out in zip(chunk, outs, strict=True):
                if out is None:  # the whole document, as the observer holds it
                    try:
                        text = texts.text(doc_id, fields)  # type: ignore[union-attr]
                    except EncodeError:  # _encode says why and drops it
                        text = self._encode({"msg": "added", "collection": name, "id": doc_id,
                                             "fields": fields})
                        if text is None:
                            continue
                    batch.append(text)
                    size += utf8_size(text)
                else:
                    for msg in out:
                        text = self._encode(msg)
                        if text is not None:
                            batch.append(text)
                            size += utf8_size(text)
                if size >= limit:
                    self._queue_texts(batch, size)
                    batch, size = [], 0
            if not sub.active or self._close_queued:
                break
        if batch:
            self._queue_texts(batch, size)
        return sub.active and not self._close_queued

    def sub_prepared(self, sub_id: str, message: PreparedMessage) -> None:
        if self._close_queued:
            return  # closing: not even the mergebox needs it
        try:
            _ = message.size  # encodes the shared text once
        except EncodeError as exc:  # dropped before the mergebox records it
            logger.warning("connection %s: dropping a %r message (%s)", self.handle.id, message.op, exc)
            return
        welcome = self._welcoming.get(sub_id)
        if welcome is not None:  # its documents are still on their way: this follows them
            if self._reserve(message.size):
                welcome.changes.append(message)
                self._held += message.size
            return
        self._deliver_prepared(sub_id, message)

    def sub_prepared_all(self, sub_id: str, messages: list[PreparedMessage]) -> None:
        """An observer's batch for ``sub_id``, in order: through the mergebox message by
        message as :meth:`sub_prepared` does, then written at once with one non-blocking
        ``send`` when nothing is queued and no writer is at work, else queued as one item
        (one write per batch either way)."""
        if self._close_queued:
            return
        handle = self.session.diffed_handle(sub_id)
        if handle is None:
            return  # the subscription is gone: nothing to send or record
        if self._mute_data or sub_id in self._welcoming or gevent.getcurrent() is self._processor:
            for message in messages:  # the general path (held for a welcome, muted, paced)
                self.sub_prepared(sub_id, message)
            return
        apply_diffed = self.session.view.apply_diffed
        texts: list[str] = []
        size = 0
        for message in messages:
            try:
                text, length = message.text, message.size  # encoded once for every session
            except EncodeError as exc:  # dropped before the mergebox records it
                logger.warning("connection %s: dropping a %r message (%s)", self.handle.id, message.op, exc)
                continue
            out = apply_diffed(handle, message.op, message.collection, message.id, message.fields,
                               message.cleared, message.before, message.after)
            if out is None:
                texts.append(text)
                size += length
                continue
            for msg in out:
                if message.same_as(msg):  # the shared text, already measured
                    texts.append(text)
                    size += length
                    continue
                encoded = self._encode(msg)
                if encoded is not None:
                    texts.append(encoded)
                    size += utf8_size(encoded)
        if not texts or not self._reserve(size):
            return
        if (not self._outbox and self._send_nowait is not None and self._writer_idle()
                and not self.transport.closed):  # (a close queued returned above)
            # Nothing queued and no writer at work: write it now, as the direct-write
            # greenlet would a moment later (the fan-out sends as it goes).
            self._buffered += size
            if self._write_nowait(texts, size):
                return
            self._buffered -= size
        self._push(texts[0] if len(texts) == 1 else _TextBatch(texts, size), size)

    def _deliver_prepared(self, sub_id: str, message: PreparedMessage) -> None:
        # The observer diffed it already: a document only this subscription holds takes it
        # as it is, with its shared text (no field compared again in the mergebox).
        out = self.session.subscription_diffed(sub_id, message.op, message.collection, message.id,
                                               message.fields, message.cleared, message.before,
                                               message.after)
        if out is None:
            if not self._mute_data:
                self._queue_text(message.text, message.size)
            return
        for msg in out:
            if self._mute_data:
                continue
            # Usually the mergebox lets the message through as is: reuse the shared text.
            if message.same_as(msg):
                self._queue_text(message.text, message.size)
            else:
                self._queue_text(stringify(msg))

    def sub_ready(self, sub_id: str) -> None:
        self._send_all(self.session.subscription_ready(sub_id))

    def sub_failed(self, sub_id: str, error: MeteorError) -> None:
        counters.publication_errors += 1
        self._subs.pop(sub_id, None)
        self._send_all(self.session.subscription_failed(sub_id, error))

    def sub_stopped(self, sub_id: str) -> None:
        self._subs.pop(sub_id, None)
        self._send_all(self.session.subscription_stopped(sub_id))

    # -- the registry and operator commands ---------------------------------------------

    @property
    def buffered_bytes(self) -> int:
        """Bytes waiting to be written to this client (queued, being written, or held
        behind a new subscription's documents)."""
        return self._buffered + self._held

    def subscriptions(self) -> Iterable[Subscription]:
        """This connection's running subscriptions (universal ones included)."""
        return self._subs.values()

    def registry_entries(self) -> tuple[ConnectionEntry, list[SubscriptionEntry]] | None:
        """This connection and its subscriptions as ``ddpctl conns/subs ls`` show them."""
        if not self.handle.id or self._closing:
            return None
        utc = datetime.UTC
        entry = ConnectionEntry(
            self.handle.id, self.handle.client_address, None if self.user_id is None else str(self.user_id),
            self.transport.kind,
            datetime.datetime.fromtimestamp(self.opened_at, utc))
        subs = []
        for sub_id, sub in list(self._subs.items()):
            if sub_id in self.session.universal:
                continue  # listed are the subscriptions the client made
            held = self.session.documents_held(sub_id)
            subs.append(SubscriptionEntry(
                self.handle.id, sub_id, sub.name, sub.shown_params, sum(held.values()), sorted(held),
                datetime.datetime.fromtimestamp(sub.started_at, utc), sub.refresh_mode))
        return entry, subs

    def resend(self, docs: Iterable[tuple[str, str]], dry_run: bool = False) -> list[tuple[str, str]]:
        """Send again what the client holds of ``docs`` (collection, id): a ``changed`` with
        every field.  Values come from the mergebox, so they are what the client should have.

        Returns the documents to resend at once; the processor sends them, paced by what the
        client reads, so a caller looping over connections never waits on a slow one."""
        sent = [(collection, doc_id) for collection, doc_id in docs
                if self.session.view.document(collection, doc_id) is not None]  # what it may see
        if sent and not dry_run:
            self._tasks.append(lambda: self._resend_now(sent))
            self._start_processor()
        return sent

    def _resend_now(self, docs: list[tuple[str, str]]) -> None:
        for collection, doc_id in docs:
            if self._close_queued:
                return
            fields = self.session.view.document(collection, doc_id)
            if fields is None:
                continue  # gone since
            message: dict[str, Any] = {"msg": "changed", "collection": collection, "id": doc_id}
            if fields:
                message["fields"] = fields
            self._send(message)

    # -- writing ------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        text = self._encode(message)
        if text is not None:
            self._queue_text(text)

    def _send_all(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            if self._mute_data and message.get("msg") in _DATA_MESSAGES:
                continue  # a user change is re-running subscriptions; the diff follows
            self._send(message)

    def _encode(self, message: dict[str, Any]) -> str | None:
        """The message's text; if it cannot be encoded, Meteor's stand-in or ``None``.

        A ``result`` or an errored ``nosub`` becomes ``500 Internal server error`` (the client
        must hear about its call or subscription); an ``error`` loses its
        ``offendingMessage``; any other message is dropped.  One warning line each.
        """
        try:
            return stringify(message)
        except EncodeError as exc:
            kind = message.get("msg")
            logger.warning("connection %s: cannot encode a %r message (id %r): %s", self.handle.id, kind,
                           message.get("id"), exc)
            if kind == "result" or (kind == "nosub" and "error" in message):
                stand_in = {"msg": kind, "id": message.get("id"), "error": internal_server_error().to_json()}
            elif kind == "error":
                stand_in = {"msg": "error", "reason": message.get("reason")}
            else:
                return None
            try:
                return stringify(stand_in)
            except EncodeError:
                logger.warning("connection %s: dropping a %r message", self.handle.id, kind)
                return None

    def _queue_text(self, text: str, size: int = -1) -> None:
        if size < 0:
            size = utf8_size(text)
        if gevent.getcurrent() is self._processor:
            self._wait_writable()  # own work: pace it by what the client reads
        elif not self._reserve(size):
            return
        self._push(text, size)

    def _queue_texts(self, texts: list[str], size: int) -> None:
        """Queue ``texts`` (``size`` bytes in UTF-8) as one item: a welcome's batch."""
        if gevent.getcurrent() is self._processor:
            self._wait_writable()
        elif not self._reserve(size):
            return
        self._push(_TextBatch(texts, size), size)

    def _reserve(self, size: int) -> bool:
        """Room for ``size`` more bytes from a producer that must not wait; else drop the client."""
        if self._buffered + self._held + size <= self.config.send_buffer_limit:
            return True
        if not self._close_queued:
            self._drop_slow_client("send buffer limit exceeded")
        return False

    def _wait_writable(self) -> None:
        """Block this (the processor's) greenlet while the buffer is above the high-water mark."""
        while self._buffered >= self._high_water and not self._close_queued:
            self._writable.clear()
            self._writable.wait()

    def _push(self, item: Any, size: int) -> None:
        if self._close_queued or self.transport.closed:
            return  # a close frame is on its way, or the client is gone: nothing would be sent
        if not self._buffered:
            self._pending_since = time.monotonic()
        self._buffered += size
        self._outbox.append(item)
        if (self._send_nowait is not None and self._writer_idle()
                and (item.__class__ is str or item.__class__ is _TextBatch)):
            # No writer at work: the direct-write list writes it (the greenlet, or whoever
            # queues its 16th connection), with what else comes for this connection
            # meanwhile, without a switch to a writer of its own.
            if not self._direct_due:
                self._direct_due = True
                _direct_writes.schedule(self)
            return
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._writer is None:
            self._writer = gevent.spawn(self._write_loop)
        elif self._parked is not None:
            # One wake-up per burst: what else is queued before the writer runs goes with it.
            waiter, self._parked = self._parked, None
            get_hub().loop.run_callback(waiter.switch, None)

    def _writer_idle(self) -> bool:
        """No writer at work: none, or parked, with nothing of its batch in flight."""
        return (self._writer is None or self._parked is not None) and not self._in_flight

    def _write_direct(self) -> None:
        """From the direct-write list (its greenlet, or inline from ``schedule``): write the
        data at the head of the queue with one non-blocking send, unless a writer is at
        work; what the socket does not take, and anything queued behind it (a close, a
        heartbeat), is left to the writer.  Never blocks or switches."""
        self._direct_due = False
        outbox = self._outbox
        if not outbox or not self._writer_idle():
            return  # written already, or a writer is at it
        items: list[Any] = []
        texts: list[str] = []
        size = 0
        while outbox and len(items) < _BATCH and size < _BATCH_BYTES:
            item = outbox[0]
            if item.__class__ is str:
                texts.append(item)
            elif item.__class__ is _TextBatch:
                texts.extend(item.texts)
            else:
                break
            items.append(outbox.popleft())
            size += _size_of(item)
        if items and not self._write_nowait(texts, size):
            outbox.extendleft(reversed(items))  # not now (a pong or a close being written)
            self._wake_writer()
            return
        if outbox:
            self._wake_writer()

    def _write_nowait(self, texts: list[str], size: int) -> bool:
        """Write ``texts`` (``size`` bytes in UTF-8, counted in the buffer) with one
        non-blocking send; what the socket does not take goes first in the queue as a
        :class:`_Flush`, for the writer (woken).  False, nothing done, when the transport
        cannot try now (a pong or a close being written): the caller queues them.  Raises
        nothing: a failed write drops the connection (logged)."""
        assert self._send_nowait is not None
        try:
            left = self._send_nowait(texts)
        except Exception as exc:
            # ConnectionClosed: the peer is gone (or the socket was cut); the reader sees it
            # too and cleans up.  Anything else (a framing bug, MemoryError) may have cut a
            # frame: the connection is dropped, not written to again, and the caller (an
            # observer's fan-out loop) goes on with the next subscriber.
            self._buffered = max(0, self._buffered - size)
            self._closing = self._close_queued = True
            self._writable.set()
            if not isinstance(exc, ConnectionClosed):
                logger.exception("connection %s: a write failed; dropping the connection", self.handle.id)
                self.transport.abort()
            return True
        if left is None:
            return False
        self._buffered = max(0, self._buffered - size)
        counters.messages_sent += len(texts)  # once per write, not per message
        counters.bytes_sent += size
        if left:
            if not self._buffered:
                self._pending_since = time.monotonic()
            self._buffered += left
            self._outbox.appendleft(_Flush(left))
            self._wake_writer()
        if self._buffered < self._low_water:
            self._writable.set()
        return True

    def _push_close(self, code: int, reason: str) -> None:
        request = _CloseRequest(code, reason)
        self._push(request, request.size)
        self._close_queued = True
        self._writable.set()  # own work waiting for room stops

    def _drop_slow_client(self, reason: str) -> None:
        """Drop what is buffered (memory freed now), then close with 1008 after the frame in flight."""
        logger.warning("closing connection %s (%s): %s (%d bytes buffered, limit %d)",
                       self.handle.id, self.handle.client_address, reason, self._buffered + self._held,
                       self.config.send_buffer_limit)
        counters.slow_clients_closed += 1
        self._closing = True
        self._drop_buffers()
        self._close_queued = False
        self._push_close(1008, reason)

    def _drop_buffers(self) -> None:
        dropped = self._buffered + self._held - self._in_flight
        self._outbox.clear()
        self._tasks.clear()
        for welcome in self._welcoming.values():
            welcome.changes.clear()
        self._welcoming.clear()
        self._held = 0
        self._buffered = self._in_flight
        self._pending_since = time.monotonic()
        self._writable.set()
        if dropped >= _TRIM_AFTER:
            release_free_memory()

    def _write_loop(self) -> None:
        # Busy connections keep their writer (no spawn per message); an idle one parks it
        # without a timer, and tick() ends it after _WRITER_LINGER (less memory per idle
        # connection).  A wake-up is a callback on the hub, one per burst of messages.
        outbox = self._outbox
        try:
            while True:
                if not outbox:
                    waiter = Waiter()
                    self._parked, self._parked_at = waiter, time.monotonic()
                    if waiter.get() is _RETIRE and not outbox:
                        return
                    continue
                if self._write_batch(outbox.popleft()):
                    return
        except ConnectionClosed:
            # The peer is gone (or the socket was cut): the reader sees it too and cleans up.
            self._closing = self._close_queued = True
            self._writable.set()
        finally:
            self._writer = None
            self._parked = None

    def _retire_writer(self, now: float) -> None:
        """End a writer parked for ``_WRITER_LINGER`` seconds or more (from tick())."""
        if _retire_parked(self._parked, self._parked_at, now, _WRITER_LINGER):
            self._parked = None

    def _retire_reader(self, now: float) -> None:
        """End a watched reader parked for ``_READER_LINGER`` seconds or more (from tick());
        it reads once more, then leaves the socket to the watcher's callback."""
        if _retire_parked(self._reader_parked, self._reader_parked_at, now, _READER_LINGER):
            self._reader_parked = None

    def _write_batch(self, first: Any) -> bool:
        """Send ``first`` and what else is queued (up to ``_BATCH`` frames or about
        ``_BATCH_BYTES``); True once closed."""
        outbox = self._outbox
        batch = [first]
        size = _size_of(first)
        while outbox and len(batch) < _BATCH and size < _BATCH_BYTES:
            item = outbox.popleft()
            batch.append(item)
            size += _size_of(item)
        self._in_flight = size
        sent = 0  # messages written; with their bytes, counted once per batch
        other = 0  # bytes of the batch that are not messages (a close frame, a direct write's rest)
        try:
            texts: list[str] = []
            for item in batch:
                if isinstance(item, str):
                    texts.append(item)
                    continue
                if isinstance(item, _TextBatch):
                    texts.extend(item.texts)
                    continue
                if texts:
                    self.transport.send(texts)
                    sent += len(texts)
                    texts = []
                if isinstance(item, _CloseRequest):
                    other += item.size
                    self._outbox.clear()
                    self.transport.close(item.code, item.reason)
                    return True
                if isinstance(item, _Flush):
                    other += item.size  # counted by the direct write that left it
                    self.transport.flush()  # type: ignore[attr-defined]
                    continue
                self.transport.send_heartbeat()
            if texts:
                self.transport.send(texts)
                sent += len(texts)
            return False
        finally:
            if sent:
                counters.messages_sent += sent
                counters.bytes_sent += max(0, size - other)
            self._in_flight = 0
            self._buffered = max(0, self._buffered - size)
            if self._buffered < self._low_water:
                self._writable.set()

    def _stalled(self, now: float) -> bool:
        """Data buffered, and no byte of it written for ``send_timeout`` seconds."""
        return (self._buffered > 0
                and now - max(self._pending_since, self.transport.sent_at) >= self.config.send_timeout)

    # -- heartbeats ---------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Called about every second by the server: send timeout, handshake timeout, heartbeats,
        and the end of a writer idle for a while."""
        self._retire_writer(now)
        self._retire_reader(now)
        if self._input_paused and self.transport.closed:
            self._resume_reading()  # watched and paused: it sees the end and cleans up
        if self._stalled(now):
            if self._close_queued:  # not even the close frame moves: cut the socket
                logger.warning("connection %s (%s): the close frame could not be sent in %.0f s; "
                               "dropping the connection", self.handle.id, self.handle.client_address,
                               self.config.send_timeout)
                self._drop_buffers()
                self.transport.abort()
            else:
                self._drop_slow_client("send timeout")
            return
        if self._closing:
            return
        if (self.config.sockjs_heartbeat > 0 and self.transport.heartbeats
                and now - self._last_transport_beat >= self.config.sockjs_heartbeat):
            # SockJS ``h`` frames keep proxies from closing a quiet connection.
            self._last_transport_beat = now
            self._push(_TRANSPORT_HEARTBEAT, 0)
        if not self.session.connected:
            # Before the handshake, Meteor closes a socket that stays silent for 45 s.
            if now - self._opened_mono >= self.config.handshake_timeout:
                logger.info("closing a connection that sent no connect in %.0f s",
                            self.config.handshake_timeout)
                self.close(1000, "Normal closure")
            return
        heartbeat = self._heartbeat
        if heartbeat is None or not heartbeat.enabled:
            return
        if self._input_paused:
            heartbeat.message_received()  # it sent more than we have processed; reading resumes soon
        beat = heartbeat.tick(now)
        if beat is Beat.PING:
            self._send({"msg": "ping"})
        elif beat is Beat.TIMEOUT:
            logger.info("closing connection %s: heartbeat timed out", self.handle.id)
            self.close(1000, "Normal closure")


def _size_of(item: Any) -> int:
    if isinstance(item, str):
        return utf8_size(item)
    if isinstance(item, (_CloseRequest, _TextBatch, _Flush)):
        return item.size
    return 0


def _retire_parked(waiter: Waiter | None, parked_at: float, now: float, linger: float) -> bool:
    """Wake ``waiter`` (a greenlet parked without a timer since ``parked_at``) with
    ``_RETIRE`` once it has waited ``linger`` seconds; True if it was woken."""
    if waiter is None or now - parked_at < linger:
        return False
    get_hub().loop.run_callback(waiter.switch, _RETIRE)
    return True


class _DirectWrites:
    """Writes queued data for connections whose writer greenlet is not at work, from one
    greenlet woken once per burst (a batch fanned out to 1,000 connections: one switch here,
    then one non-blocking ``send`` per connection with everything queued for it meanwhile),
    instead of a switch to and from each connection's writer.  A socket that does not take
    it all, a TLS socket, a close frame or a heartbeat leave the rest to the writer.

    Once ``WRITE_NOW_AT`` connections are due, the greenlet that queued for the last of
    them writes them at once (non-blocking, no switch): a fan-out to many connections then
    sends as it goes instead of after its last subscriber, so the first clients' bytes
    leave while the rest are still being queued and the load on the clients' side is
    spread over the whole fan-out (commit-to-client p50 and p99 at 1,000 clients; README
    "Performance: where the time goes").  A connection queued for again after its write
    is written again: a burst of a few connections still goes in one write each."""

    WRITE_NOW_AT = 16

    def __init__(self) -> None:
        self._due: list[DDPConnection] = []
        self._greenlet: gevent.Greenlet | None = None
        self._parked: Waiter | None = None

    def schedule(self, conn: DDPConnection) -> None:
        self._due.append(conn)
        if len(self._due) >= self.WRITE_NOW_AT and gevent.getcurrent() is not self._greenlet:
            due, self._due = self._due, []
            self._write(due)
            return
        if self._parked is not None:
            waiter, self._parked = self._parked, None
            get_hub().loop.run_callback(waiter.switch, None)
        elif self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    @staticmethod
    def _write(due: list[DDPConnection]) -> None:
        for conn in due:
            try:
                conn._write_direct()
            except Exception:
                logger.exception("connection %s: direct write failed", conn.handle.id)

    def _run(self) -> None:
        try:
            while True:
                if not self._due:
                    self._parked = Waiter()
                    self._parked.get()
                    continue
                due, self._due = self._due, []
                self._write(due)
        finally:
            self._greenlet = None
            self._parked = None


_direct_writes = _DirectWrites()
