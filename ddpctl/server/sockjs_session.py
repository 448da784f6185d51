"""A SockJS session over the HTTP transports: one DDP connection across many requests.

The HTTP fallbacks (``xhr``, ``xhr_streaming``, ``eventsource``, ``htmlfile``, ``jsonp``;
see :mod:`.sockjs_http`) carry one SockJS connection over a series of requests: a
*receiver* (a polling or streaming response) takes the server's frames, ``xhr_send`` /
``jsonp_send`` requests bring the client's messages.  A :class:`SockJSSession` is that
connection: it implements :class:`.connection.Transport` for the :class:`DDPConnection`
whose greenlet it owns, and HTTP receivers attach to it and detach, as sockjs-node 0.3's
``Session`` (``lib/transport.js``) does:

* the first receiver gets the ``o`` frame; at most one receiver at a time -- a second one
  gets ``c[2010,"Another connection still open"]`` and ends, the first carries on;
* a session with no receiver for ``disconnect_delay`` seconds ends (its DDP connection
  closes: subscriptions stop); a receiver whose client went away mid-response ends it at
  once (sockjs-node's ``didAbort``);
* once closed, each receiver that still comes gets the close frame, until the session has
  had no receiver for ``disconnect_delay``; after that the session id is unknown
  (``xhr_send`` answers 404, a new receiver starts a new session, which sockjs-client
  reports as "Server lost session").

Flow control stays the connection's (:mod:`.connection`): :meth:`SockJSSession.send`
returns only once a receiver has written the frame, so while no receiver is attached the
connection's writer waits and what is queued stays counted in its send buffer --
``send_buffer_limit`` and ``send_timeout`` (via :attr:`SockJSSession.sent_at`) apply as on a
WebSocket, and a poll after a pause gets the next batch of what piled up.  Input is bounded
too: a send request waits while ``receive_queue_bytes`` of earlier messages are still
waiting for the connection's reader.
"""
from __future__ import annotations

import enum
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator

import gevent
from gevent.event import Event

from . import sockjs
from .websocket import ConnectionClosed

__all__ = ["SockJSSession", "SessionRegistry", "Receiver"]

logger = logging.getLogger(__name__)


class _State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"  # the close frame is set; receivers get it until the session expires
    CLOSED = "closed"  # expired or aborted: out of the registry


class Receiver:
    """One polling or streaming response: frames go to it until it ends.

    ``limit`` is the bytes after which the response ends (sockjs-node's ``response_limit``
    for streaming, 1 for polling: one frame per response).
    """

    __slots__ = ("limit", "written", "finished", "gone", "_pending_send")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.written = 0
        self.finished = False  # the close frame went out: end the response
        self.gone = False  # its client closed the connection (SockJSSession.receiver_gone)
        self._pending_send = False  # the frame being written came from SockJSSession.send


class SessionRegistry:
    """This process's SockJS sessions by id (a session lives in one process only)."""

    def __init__(self) -> None:
        self._sessions: dict[str, SockJSSession] = {}

    def get(self, session_id: str) -> SockJSSession | None:
        return self._sessions.get(session_id)

    def add(self, session: SockJSSession) -> None:
        self._sessions[session.id] = session

    def discard(self, session: SockJSSession) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]

    def __len__(self) -> int:
        return len(self._sessions)

    def closing(self) -> int:
        """Sessions whose close frame no receiver has taken yet (shutdown waits for them, up
        to its timeout, as it waits for WebSocket close frames to be written)."""
        return sum(1 for session in self._sessions.values() if session.close_pending)

    def __iter__(self) -> Iterator[SockJSSession]:
        return iter(list(self._sessions.values()))


class SockJSSession:
    """A SockJS connection over HTTP requests; the :class:`.connection.Transport` of its
    DDP connection.

    ``kind`` is what ``ddpctl conns ls`` shows (``sockjs/xhr-streaming``, ...: the transport
    of the request that opened it).  ``disconnect_delay`` (seconds) and
    ``receive_queue_bytes`` as described in the module docstring.
    """

    heartbeats = True  # the connection's ticker sends SockJS ``h`` frames (to a receiver)

    def __init__(self, registry: SessionRegistry, session_id: str, protocol: str,
                 disconnect_delay: float, receive_queue_bytes: int) -> None:
        self.id = session_id
        self.kind = f"sockjs/{protocol}"
        self._registry = registry
        self._disconnect_delay = disconnect_delay
        self._receive_queue_bytes = receive_queue_bytes
        self._state = _State.OPEN
        self._open_pending = True  # the first receiver writes ``o``
        self._close_frame: str | None = None
        self._close_delivered = False
        self._close_code, self._close_reason = 1006, "session closed"
        self._receiver: Receiver | None = None
        self._outgoing: str | None = None  # the frame send() hands to a receiver
        self._outgoing_done = Event()
        self._outgoing_written = False
        self._receiver_wake = Event()  # the receiver has something to do
        self._incoming: deque[tuple[list[str | bytes], int]] = deque()  # (messages, body bytes)
        self._incoming_bytes = 0
        self._incoming_ready = Event()
        self._incoming_room = Event()
        self._incoming_room.set()
        self._timer: gevent.Greenlet | None = None
        self.greenlet: gevent.Greenlet | None = None
        self.sent_at = time.monotonic()
        registry.add(self)
        self._start_timer()  # until the first receiver attaches

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, run: Callable[[], None]) -> None:
        """Run the session's DDP connection (``run``) on a greenlet the session owns."""
        self.greenlet = gevent.spawn(self._run, run)

    def _run(self, run: Callable[[], None]) -> None:
        try:
            run()
        except Exception:
            logger.exception("SockJS session %s: the connection failed", self.id)
        finally:
            if self._state is _State.OPEN:  # the connection ended without closing us
                self._expire()

    @property
    def close_pending(self) -> bool:
        """Closing, and the close frame not yet written to a receiver."""
        return self._state is _State.CLOSING and not self._close_delivered

    @property
    def state(self) -> str:
        """``open``, ``closing`` (close frame set) or ``closed`` (gone from the registry)."""
        return self._state.value

    def _start_timer(self) -> None:
        self._cancel_timer()
        self._timer = gevent.spawn_later(self._disconnect_delay, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.kill(block=False)
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._receiver is None:
            logger.debug("SockJS session %s: no receiver for %.0f s; closing it", self.id,
                         self._disconnect_delay)
            self._expire()

    def _expire(self) -> None:
        """Gone: out of the registry; every waiter wakes (the connection sees it closed)."""
        if self._state is _State.CLOSED:
            return
        if self._state is _State.OPEN:
            self._close_code, self._close_reason = 1006, "session timed out"
        self._state = _State.CLOSED
        self._cancel_timer()
        self._registry.discard(self)
        self._wake_all()

    def _wake_all(self) -> None:
        self._receiver_wake.set()
        self._outgoing_done.set()
        self._incoming_ready.set()
        self._incoming_room.set()

    # -- receivers (sockjs_http's response generators) ----------------------------------

    def attach(self, receiver: Receiver) -> bool:
        """Make ``receiver`` the session's; False if another one is attached (answer it with
        :data:`sockjs.ANOTHER_CONNECTION`) or the session is gone."""
        if self._receiver is not None or self._state is _State.CLOSED:
            return False
        self._cancel_timer()
        self._receiver = receiver
        self._receiver_wake.set()
        return True

    def detach(self, receiver: Receiver, aborted: bool) -> None:
        """The receiver's response ended; ``aborted`` if its client went away mid-response
        (then the session ends now, as sockjs-node's ``didAbort``), else the session waits
        ``disconnect_delay`` for the next one."""
        if self._receiver is not receiver:
            return
        self._receiver = None
        if receiver._pending_send:  # taken, never written: the client is gone with it
            aborted = True
        if aborted:
            self._expire()
        elif self._state is not _State.CLOSED:
            self._start_timer()

    def receiver_gone(self, receiver: Receiver) -> None:
        """The client of ``receiver`` closed its connection while it waited: it ends, and
        the session with it (``detach`` with ``aborted``), as sockjs-node's ``didAbort``."""
        receiver.gone = True
        if self._receiver is receiver:
            self._receiver_wake.set()

    def next_frame(self, receiver: Receiver) -> str | None:
        """Block until the receiver has a frame to write; ``None``: end its response."""
        while True:
            if self._receiver is not receiver or receiver.finished or receiver.gone:
                return None
            if self._open_pending:
                self._open_pending = False
                return sockjs.OPEN
            if self._outgoing is not None:
                frame, self._outgoing = self._outgoing, None
                receiver._pending_send = True
                return frame
            if self._close_frame is not None:
                receiver.finished = True
                return self._close_frame
            if self._state is _State.CLOSED:
                return None
            self._receiver_wake.clear()
            self._receiver_wake.wait()

    def frame_written(self, receiver: Receiver, size: int) -> None:
        """The frame ``next_frame`` gave went out (``size`` bytes with its wrapping)."""
        self.sent_at = time.monotonic()
        receiver.written += size
        if receiver.finished:
            self._close_delivered = True
        if receiver._pending_send:
            receiver._pending_send = False
            self._outgoing_written = True
            self._outgoing_done.set()

    # -- the client's messages (xhr_send, jsonp_send) -----------------------------------

    def deliver(self, messages: list[str], size: int) -> None:
        """Queue a send request's messages (``size``: its body bytes) for the connection's
        reader, waiting while ``receive_queue_bytes`` are already queued.  Dropped if the
        session is closing, as sockjs-node does."""
        while self._incoming_bytes >= self._receive_queue_bytes and self._state is _State.OPEN:
            self._incoming_room.clear()
            self._incoming_room.wait()
        if self._state is not _State.OPEN or not messages:
            return
        self._incoming.append((list(messages), size))
        self._incoming_bytes += size
        self._incoming_ready.set()

    # -- Transport (called by the DDPConnection) ----------------------------------------

    def open(self) -> None:
        """Nothing to do: the first receiver writes the ``o`` frame."""

    def receive(self) -> list[str | bytes]:
        """The next send request's messages; ``ConnectionClosed`` once the session closes."""
        while not self._incoming:
            if self._state is not _State.OPEN:
                raise ConnectionClosed(self._close_code, self._close_reason)
            self._incoming_ready.clear()
            self._incoming_ready.wait()
        if self._state is not _State.OPEN:
            raise ConnectionClosed(self._close_code, self._close_reason)
        messages, size = self._incoming.popleft()
        self._incoming_bytes -= size
        if self._incoming_bytes < self._receive_queue_bytes:
            self._incoming_room.set()
        return messages

    def send(self, texts: list[str]) -> None:
        """Hand ``a[...]`` to a receiver; return once it is written (waiting for a receiver
        if none is attached); ``ConnectionClosed`` if the session ends first."""
        self._hand_over(sockjs.http_messages_frame(texts))

    def send_heartbeat(self) -> None:
        """``h`` to the receiver attached now, if any (a poll it ends: the client polls again)."""
        if self._receiver is not None and self._outgoing is None and self._state is _State.OPEN:
            self._hand_over(sockjs.HEARTBEAT)

    def _hand_over(self, frame: str) -> None:
        if self._state is not _State.OPEN:
            raise ConnectionClosed(self._close_code, self._close_reason)
        self._outgoing = frame
        self._outgoing_written = False
        self._receiver_wake.set()
        # Also once closing (a 1009 from a send request): the frame still goes out, before
        # the close frame, if a receiver comes before the session expires.
        while not self._outgoing_written and self._state is not _State.CLOSED:
            self._outgoing_done.clear()
            self._outgoing_done.wait()
        if not self._outgoing_written:
            self._outgoing = None
            raise ConnectionClosed(self._close_code, self._close_reason)

    def close(self, code: int, reason: str) -> None:
        """Close with ``c[code,"reason"]``: the receiver attached now gets it and ends, and so
        does each one that comes until the session expires."""
        if self._state is not _State.OPEN:
            return
        self._state = _State.CLOSING
        self._close_code, self._close_reason = code, reason
        self._close_frame = sockjs.close_frame(code, reason)
        self._receiver_wake.set()
        self._incoming_ready.set()  # the reader sees it closed
        self._incoming_room.set()
        if self._receiver is None and self._timer is None:
            self._start_timer()

    def abort(self) -> None:
        """End the session without a close frame (the connection was cut); a closing session
        stays to hand its close frame to the next receiver."""
        if self._state is _State.OPEN:
            self._expire()

    @property
    def closed(self) -> bool:
        return self._state is not _State.OPEN
