"""A server-side WebSocket over a gevent socket, framed by wsproto (sans-IO).

The HTTP upgrade is answered by the HTTP layer (``switch_protocols`` in
:mod:`ddpctl.server.http`, called from :mod:`ddpctl.server.handler`); this module then
owns the socket.  A message larger than ``max_message_size`` bytes closes the connection
with 1009 ("message too big", RFC 6455 7.4.1) before the payload is even buffered whole.
A binary message is handed on as bytes (DDP is text; the session decodes it as UTF-8 and
answers ``Bad request`` if it is not).
With permessage-deflate agreed (``deflate``, see :mod:`ddpctl.server.deflate`) the limit
applies to the inflated message, and text frames are compressed through a shared cache.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import socket
import time
from collections.abc import Callable

import gevent.socket
from gevent.lock import Semaphore
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    TextMessage,
)

from .deflate import DeflateParams, InboundDeflate, frame_compressor, plain_frame, text_frame

__all__ = ["WebSocket", "accept_key", "text_frame", "utf8_length", "ConnectionClosed",
           "MESSAGE_TOO_BIG"]

logger = logging.getLogger(__name__)
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_READ_SIZE = 65536
MESSAGE_TOO_BIG = 1009  # RFC 6455 7.4.1


def utf8_length(text: str) -> int:
    """Bytes of ``text`` in UTF-8, without encoding it when its length settles the answer."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def _nonblocking_send(sock: socket.socket | None, send: Callable[[memoryview], int]
                      ) -> Callable[[bytes], int] | None:
    """A send that never blocks (raises ``BlockingIOError`` when the socket buffer is full),
    when ``send`` is a plain gevent socket's own: not a TLS socket (its bytes must go through
    the TLS layer), not another callable."""
    if sock is None or type(sock) is not gevent.socket.socket or send != sock.send:
        return None
    raw = sock._sock  # the OS socket, in non-blocking mode under gevent
    flags = socket.MSG_DONTWAIT

    def send_nowait(data: bytes) -> int:
        return raw.send(data, flags)

    return send_nowait


class ConnectionClosed(Exception):
    """The WebSocket is closed; ``code`` says how."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"{code} {reason}".strip())
        self.code = code
        self.reason = reason


class WebSocket:
    def __init__(self, read: Callable[[int], bytes], send: Callable[[memoryview], int],
                 sock: socket.socket | None, max_message_size: int,
                 deflate: DeflateParams | None = None,
                 read_ready: Callable[[int], bytes | None] | None = None) -> None:
        """``send`` is a socket's ``send`` (may write part of the data, returns the count).

        ``read_ready``: like ``read`` but ``None`` instead of waiting when the socket has
        nothing yet (for :meth:`receive_ready`).

        ``deflate``: the permessage-deflate parameters agreed in the handshake, or ``None``.

        ``sent_at`` is the ``time.monotonic()`` of the last write that moved bytes: a peer
        that stops reading leaves it behind (the connection's send timeout looks at it).
        """
        self._read = read
        self._read_ready = read_ready
        self._send = send
        self.sent_at = time.monotonic()
        # The reader answers pings and close frames while the writer may be mid-send.
        self._write_lock = Semaphore()
        self._socket = sock
        self._send_nowait = _nonblocking_send(sock, send)
        self._tail: memoryview | None = None  # what send_many_nowait left: written before anything else
        self._ws = Connection(ConnectionType.SERVER,
                              [InboundDeflate(max_message_size)] if deflate is not None else None)
        self._frame = frame_compressor(deflate).frame if deflate is not None else None
        self._max = max_message_size
        self._parts: list[str | bytes] = []
        self._size = 0
        self._pending: list[str | bytes] = []
        self.closed: ConnectionClosed | None = None

    def receive(self) -> str | bytes:
        """Block until the next complete message (text, or bytes for a binary message);
        raises ``ConnectionClosed``."""
        message = self._next_message(self._read)
        assert message is not None  # ``read`` waits: it never answers None
        return message

    def receive_ready(self) -> str | bytes | None:
        """The next complete message if the bytes the socket already has complete one,
        else ``None`` (nothing is waited for); raises ``ConnectionClosed``.  Needs
        ``read_ready``."""
        assert self._read_ready is not None, "receive_ready needs a read_ready function"
        return self._next_message(self._read_ready)

    def _next_message(self, read: Callable[[int], bytes | None]) -> str | bytes | None:
        """The next complete message, reading with ``read`` while none is; ``None`` when
        ``read`` answers ``None`` (nothing there yet); raises ``ConnectionClosed``."""
        while not self._pending:
            if self.closed:
                raise self._closed_error()
            try:
                data = read(_READ_SIZE)
            except OSError as exc:
                self._abort(1006, f"read failed: {exc}")
                raise self._closed_error() from None
            if data is None:
                return None
            if not data:
                self._abort(1006, "connection lost")
                raise self._closed_error()
            self._ws.receive_data(data)
            self._handle_events()
        return self._pending.pop(0)

    def _handle_events(self) -> None:
        for event in self._ws.events():
            if isinstance(event, Message):
                self._message_part(event)
            elif isinstance(event, Ping):
                self._write(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if self._ws.state is ConnectionState.REMOTE_CLOSING:
                    self._write(self._ws.send(event.response()))
                    self._abort(event.code, event.reason or "")
                else:  # wsproto could not parse the peer's frames
                    logger.info("WebSocket protocol error: %s", event.reason)
                    self.close(int(event.code), "protocol error")
                return
            if self.closed:
                return

    def _message_part(self, event: Message) -> None:
        data = event.data
        self._size += utf8_length(data) if isinstance(data, str) else len(data)
        if self._size > self._max:
            logger.warning("closing a WebSocket: message over %d bytes", self._max)
            self.close(MESSAGE_TOO_BIG, "message too big")
            return
        if isinstance(event, BytesMessage):
            # DDP is text; a binary message is decoded as UTF-8 like Meteor's transports do.
            self._parts.append(bytes(event.data))
        else:
            self._parts.append(event.data)
        if event.message_finished:
            parts, self._parts, self._size = self._parts, [], 0
            if isinstance(event, TextMessage):
                self._pending.append("".join(parts))  # type: ignore[arg-type]
            else:
                self._pending.append(b"".join(parts))  # type: ignore[arg-type]

    def send(self, text: str) -> None:
        self.send_many([text])

    def send_many(self, texts: list[str]) -> None:
        """Send each text as its own message, in one socket write."""
        if self.closed:
            raise self._closed_error()
        self._write(self._frames(texts))

    def send_many_nowait(self, texts: list[str]) -> int | None:
        """Like :meth:`send_many`, but write only what the socket takes now, never blocking.

        Returns the number of bytes left unwritten (0: all written); they stay here and go
        out before anything else written to this WebSocket (:meth:`flush` writes them).
        ``None``: nothing was attempted (a TLS socket, a write in progress or bytes of an
        earlier call still pending): send with :meth:`send_many` instead.  Raises
        ``ConnectionClosed`` like :meth:`send_many`.
        """
        if self.closed:
            raise self._closed_error()
        nowait = self._send_nowait
        if nowait is None or self._tail is not None or self._write_lock.locked():
            return None
        data = self._frames(texts)
        try:
            written = nowait(data)
        except (BlockingIOError, InterruptedError):
            written = 0
        except OSError as exc:
            self._abort(1006, f"write failed: {exc}")
            raise self._closed_error() from None
        if written:
            self.sent_at = time.monotonic()
        if written == len(data):
            return 0
        self._tail = memoryview(data)[written:]
        return len(self._tail)

    def flush(self) -> None:
        """Write what :meth:`send_many_nowait` left (blocking this greenlet)."""
        if self._tail is not None:
            self._write(b"")

    def _frames(self, texts: list[str]) -> bytes:
        frame = self._frame or plain_frame
        if len(texts) == 1:
            return frame(texts[0])
        return b"".join([frame(t) for t in texts])

    def _write(self, data: bytes) -> None:
        try:
            self._sendall(data)
        except OSError as exc:
            self._abort(1006, f"write failed: {exc}")
            raise self._closed_error() from None

    def _sendall(self, data: bytes) -> None:
        # Our own loop rather than gevent's sendall: no getsockopt(SO_SNDBUF) per call, and
        # each partial write counts as progress.
        with self._write_lock:
            tail, self._tail = self._tail, None
            # A frame send_many_nowait began ends before any other.
            for view in (memoryview(data),) if tail is None else (tail, memoryview(data)):
                while view:
                    view = view[self._send(view):]
                    self.sent_at = time.monotonic()

    def _closed_error(self) -> ConnectionClosed:
        """A new :class:`ConnectionClosed` like :attr:`closed`: re-raising the stored one would
        give it a traceback whose frames hold this WebSocket, a reference cycle per closed
        connection left to the cyclic garbage collector (1,000 clients leaving: 4,000 frames
        walked by a middle-generation collection that held a fan-out back by 20-50 ms)."""
        closed = self.closed
        assert closed is not None
        return ConnectionClosed(closed.code, closed.reason)

    def abort(self) -> None:
        """Drop the connection without a close frame (the peer sees 1006)."""
        self._abort(1006, "aborted")

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (if still possible) and shut the socket down."""
        if self.closed:
            return
        if self._ws.state is ConnectionState.OPEN:
            try:
                self._sendall(self._ws.send(CloseConnection(code=code, reason=reason)))
            except OSError:
                pass  # the peer is gone; there is nobody to tell
        self._abort(code, reason)

    def _abort(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = ConnectionClosed(code, reason)
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already disconnected
