"""One DDP client connection: transport, session, bounded send queue, heartbeats.

The reader (the pywsgi handler's own greenlet) answers pings at once and queues
``sub``/``unsub``/``method``; a processor greenlet handles those in arrival order and runs
their user code itself, leasing a database connection from the server's user lane
(:mod:`.database_pool`) only while that code uses one.  A slow method therefore delays
this connection's later messages (Meteor's in-order semantics) and nothing else; the
system lane (change delivery, registry heartbeat, operator commands) has connections of
its own.  A writer greenlet drains the send queue, batching frames.  Processor and writer
exist only while they have work, so an idle connection costs one greenlet; the server's
heartbeat loop calls :meth:`DDPConnection.tick`.

Input is bounded: once ``receive_queue_size`` messages or ``receive_queue_bytes`` bytes of
frames wait for the processor, the reader stops reading the socket until it catches up, so
TCP pushes back on the client.  Output is encoded message by message before it is queued:
a message that cannot be encoded is dropped alone (a method result or a ``nosub`` error
becomes ``500 Internal server error``), never the batch it would have been written with.
"""
from __future__ import annotations

import datetime
import json
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import gevent
from gevent.event import Event
from gevent.queue import Empty, Queue

from ..ddp.ejson import to_json_value
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
from ..livedata.publish import PreparedMessage, Subscription, publications
from ..methods import methods
from ..registry import ConnectionEntry, SubscriptionEntry
from . import sockjs
from .websocket import MESSAGE_TOO_BIG, ConnectionClosed, WebSocket

if TYPE_CHECKING:
    from .runner import DDPServer

__all__ = ["DDPConnection", "RawTransport", "SockJSTransport"]

logger = logging.getLogger(__name__)
_BATCH = 256  # frames taken from the send queue per socket write
_DATA_MESSAGES = frozenset(("added", "changed", "removed"))
_WRITER_LINGER = 5.0  # seconds an idle writer greenlet waits for more before it ends
_PAUSE_CHECK = 1.0  # seconds between checks that a paused reader's connection still lives


class Transport(Protocol):
    def open(self) -> None: ...
    def receive(self) -> list[str | bytes]: ...
    def send(self, texts: list[str]) -> None: ...
    def close(self, code: int, reason: str) -> None: ...
    def abort(self) -> None: ...
    def send_heartbeat(self) -> None: ...
    @property
    def closed(self) -> bool: ...


class RawTransport:
    """DDP messages as plain WebSocket text messages (``/websocket``)."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    def open(self) -> None:
        pass

    def receive(self) -> list[str | bytes]:
        return [self.ws.receive()]

    def send(self, texts: list[str]) -> None:
        self.ws.send_many(texts)

    def close(self, code: int, reason: str) -> None:
        self.ws.close(code, reason)

    def abort(self) -> None:
        self.ws.abort()

    def send_heartbeat(self) -> None:
        """Raw WebSockets have no transport heartbeat (DDP pings do the job)."""

    @property
    def closed(self) -> bool:
        return self.ws.closed is not None


class SockJSTransport(RawTransport):
    """DDP inside SockJS frames (``/sockjs/<server>/<session>/websocket``).

    ``max_message_size`` bounds each DDP message once unescaped (the WebSocket itself is
    given :func:`sockjs.frame_limit` of it); a bigger one closes with 1009.
    """

    def __init__(self, ws: WebSocket, max_message_size: int | None = None) -> None:
        super().__init__(ws)
        self.max_message_size = max_message_size

    def open(self) -> None:
        self.ws.send(sockjs.OPEN)

    def receive(self) -> list[str | bytes]:
        frame = self.ws.receive()
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
    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code, self.reason = code, reason


class DDPConnection:
    def __init__(self, server: DDPServer, transport: Transport, environ: Mapping[str, Any]) -> None:
        self.server = server
        self.config = server.config
        self.transport = transport
        self.session = Session(has_method=methods.__contains__,
                               has_publication=publications.__contains__,
                               max_subscriptions=self.config.max_subscriptions,
                               max_params_size=self.config.max_params_size)
        self.handle = ConnectionHandle(
            id="", client_address=environ.get("REMOTE_ADDR"),
            http_headers={k[5:].lower().replace("_", "-"): v for k, v in environ.items()
                          if k.startswith("HTTP_")},
            _close=lambda: self.close(1000, "Normal closure"))
        self.user_id: Any = None
        self.opened_at = time.time()
        self._opened_mono = time.monotonic()
        self._outbox: Queue = Queue()
        self._writer: gevent.Greenlet | None = None
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

    # -- lifecycle ----------------------------------------------------------------------

    def run(self) -> None:
        """Serve the client until it goes away or the connection is closed."""
        self.server.connections.add(self)
        try:
            self.transport.open()
            if self.config.legacy_server_id:
                self._queue_text('{"server_id":"0"}')
            self._read_loop()
        except ConnectionClosed:
            pass  # the client left; cleanup below is all there is to do
        finally:
            self._closing = True
            writer = self._writer
            if writer is not None and not self.transport.closed:
                writer.join(timeout=self.config.shutdown_timeout)  # flush, then the close frame
            if self._writer is not None:
                self._writer.kill(block=False)
            self.transport.abort()
            # Like Meteor, a method already running is not interrupted when its client
            # leaves (killing it mid-way would leave half-done writes); queued ones are dropped.
            self._inbox.clear()
            processor = self._processor
            if processor is not None:
                processor.join()
            with self.server.db.lease():
                for sub in list(self._subs.values()):
                    sub.deactivate()
            self._subs.clear()
            self.server.connections.discard(self)

    def close(self, code: int = 1000, reason: str = "Normal closure") -> None:
        """Send what is queued, then close with ``code``."""
        if self._closing:
            return
        self._closing = True
        self._push(_CloseRequest(code, reason), bounded=False)

    # -- reading ------------------------------------------------------------------------

    def _read_loop(self) -> None:
        while not self._closing:
            self._wait_for_inbox_room()
            for text in self.transport.receive():
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
                    if self.session.heartbeats:
                        self._heartbeat = Heartbeat(self.config.heartbeat_interval,
                                                    self.config.heartbeat_timeout, now=time.monotonic())

    def _receive(self, text: str | bytes) -> None:
        for item in self.session.receive(text):
            if isinstance(item, Send):
                self._send(item.message)
            elif isinstance(item, Enqueue):
                size = len(text)
                self._inbox.append((item.message, size))
                self._inbox_bytes += size
                if self._processor is None:
                    self._processor = gevent.spawn(self._process_loop)
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

    def _process_loop(self) -> None:
        try:
            while self._inbox:
                msg, size = self._inbox.popleft()
                self._inbox_bytes -= size
                if self._input_paused and not self._inbox_full():
                    self._inbox_room.set()
                try:
                    self._process(msg)
                except ConnectionClosed:
                    return  # the client is gone: nothing more to answer
                except Exception:  # a bug: log it and go on with the next message
                    logger.exception("connection %s: internal error processing %.200r",
                                     self.handle.id, msg)
        finally:
            self._processor = None

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

    def _run_method(self, call: MethodCall) -> None:
        invocation = MethodInvocation(call.name, self.handle, call.random_seed, self.user_id)
        try:
            result = self.server.db.run(methods.invoke, call.name, call.params, invocation)
        except MeteorError as exc:
            self._write_fence()
            self._send_all(self.session.method_failed(call, exc))
            return
        finally:
            if invocation.user_changed:
                self._change_user(invocation.user_id)
        self._write_fence()
        self._send_all(self.session.method_returned(call, result))  # 500 if not EJSON

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
            for sub_id, sub in list(self._subs.items()):
                self.server.db.run(sub.deactivate)
                self.session.forget_documents(sub_id)
                replacement = Subscription(self, sub_id, sub.name, sub.params, self.handle, user_id)
                self._subs[sub_id] = replacement
                self.server.db.run(publications.start, replacement)
        finally:
            self._mute_data = False
        self._send_all(self.session.view.diff(before))

    def _start_subscription(self, start: SubscriptionStart) -> None:
        sub = Subscription(self, start.id, start.name, start.params, self.handle, self.user_id)
        self._subs[start.id] = sub
        self.server.db.run(publications.start, sub)

    # SubscriptionSink: a publication's output goes through this session's mergebox.

    def sub_added(self, sub_id: str, collection: str, doc_id: str, fields: Mapping[str, Any]) -> None:
        self._send_all(self.session.subscription_added(sub_id, collection, doc_id, fields))

    def sub_changed(self, sub_id: str, collection: str, doc_id: str,
                    fields: Mapping[str, Any] | None, cleared: Iterable[str]) -> None:
        self._send_all(self.session.subscription_changed(sub_id, collection, doc_id, fields, cleared))

    def sub_removed(self, sub_id: str, collection: str, doc_id: str) -> None:
        self._send_all(self.session.subscription_removed(sub_id, collection, doc_id))

    def sub_prepared(self, sub_id: str, message: PreparedMessage) -> None:
        if message.op == "changed":
            out = self.session.subscription_changed(sub_id, message.collection, message.id,
                                                    message.fields, message.cleared or ())
        elif message.op == "added":
            out = self.session.subscription_added(sub_id, message.collection, message.id,
                                                  message.fields or {})
        else:
            out = self.session.subscription_removed(sub_id, message.collection, message.id)
        for msg in out:
            if self._mute_data:
                continue
            if not message.same_as(msg):
                self._send(msg)
                continue
            try:  # usually the mergebox lets it through: reuse the shared text
                text = message.text
            except EncodeError as exc:
                logger.warning("connection %s: dropping a %r message (%s)", self.handle.id, msg["msg"], exc)
                continue
            self._queue_text(text)

    def sub_ready(self, sub_id: str) -> None:
        self._send_all(self.session.subscription_ready(sub_id))

    def sub_failed(self, sub_id: str, error: MeteorError) -> None:
        self._subs.pop(sub_id, None)
        self._send_all(self.session.subscription_failed(sub_id, error))

    def sub_stopped(self, sub_id: str) -> None:
        self._subs.pop(sub_id, None)
        self._send_all(self.session.subscription_stopped(sub_id))

    # -- the registry and operator commands ---------------------------------------------

    def registry_entries(self) -> tuple[ConnectionEntry, list[SubscriptionEntry]] | None:
        """This connection and its subscriptions as ``ddpctl conns/subs ls`` show them."""
        if not self.handle.id or self._closing:
            return None
        utc = datetime.UTC
        entry = ConnectionEntry(
            self.handle.id, self.handle.client_address, None if self.user_id is None else str(self.user_id),
            "sockjs" if isinstance(self.transport, SockJSTransport) else "websocket",
            datetime.datetime.fromtimestamp(self.opened_at, utc))
        subs = []
        for sub_id, sub in list(self._subs.items()):
            held = self.session.documents_held(sub_id)
            params = json.dumps(to_json_value(sub.params), separators=(",", ":"))
            subs.append(SubscriptionEntry(
                self.handle.id, sub_id, sub.name, params, sum(held.values()), sorted(held),
                datetime.datetime.fromtimestamp(sub.started_at, utc)))
        return entry, subs

    def resend(self, docs: Iterable[tuple[str, str]], dry_run: bool = False) -> list[tuple[str, str]]:
        """Send again what the client holds of ``docs`` (collection, id): a ``changed`` with
        every field.  Values come from the mergebox, so they are what the client should have."""
        sent = []
        for collection, doc_id in docs:
            fields = self.session.view.document(collection, doc_id)
            if fields is None:
                continue  # this client does not (may not) see it
            sent.append((collection, doc_id))
            if not dry_run:
                message: dict[str, Any] = {"msg": "changed", "collection": collection, "id": doc_id}
                if fields:
                    message["fields"] = fields
                self._send(message)
        return sent

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

    def _queue_text(self, text: str) -> None:
        self._push(text)

    def _push(self, item: Any, bounded: bool = True) -> None:
        if self.transport.closed:
            return  # the client is gone (e.g. a method finishing after it left)
        if bounded and self._outbox.qsize() >= self.config.send_queue_size:
            # A client that cannot keep up would make the server buffer without bound.
            logger.warning("closing connection %s: send queue full (%d messages)",
                           self.handle.id, self.config.send_queue_size)
            self._closing = True
            self._outbox = Queue()
            self.transport.abort()
            return
        self._outbox.put_nowait(item)
        if self._writer is None:
            self._writer = gevent.spawn(self._write_loop)

    def _write_loop(self) -> None:
        # The writer lingers a while after the queue empties: busy connections keep theirs
        # (no spawn per message), idle ones drop it (less memory per idle connection).
        try:
            while True:
                try:
                    first = self._outbox.get(timeout=_WRITER_LINGER)
                except Empty:
                    return
                if self._write_batch(first):
                    return
        finally:
            self._writer = None

    def _write_batch(self, first: Any) -> bool:
        """Send ``first`` and what else is queued (up to ``_BATCH``); True once closed."""
        outbox = self._outbox
        batch = [first]
        while len(batch) < _BATCH and outbox.qsize():
            batch.append(outbox.get_nowait())
        texts: list[str] = []
        for item in batch:
            if isinstance(item, str):
                texts.append(item)
                continue
            if texts:
                self.transport.send(texts)
                texts = []
            if isinstance(item, _CloseRequest):
                self._outbox = Queue()
                self.transport.close(item.code, item.reason)
                return True
            self.transport.send_heartbeat()
        if texts:
            self.transport.send(texts)
        return False

    # -- heartbeats ---------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Called about every second by the server: handshake timeout and heartbeats."""
        if self._closing:
            return
        if (self.config.sockjs_heartbeat > 0 and isinstance(self.transport, SockJSTransport)
                and now - self._last_transport_beat >= self.config.sockjs_heartbeat):
            # SockJS ``h`` frames keep proxies from closing a quiet connection.
            self._last_transport_beat = now
            self._push(_TRANSPORT_HEARTBEAT)
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
