"""SockJS's HTTP endpoints under ``/sockjs`` (WSGI), as sockjs-node 0.3 serves them for Meteor.

``GET /sockjs`` the welcome text, ``/sockjs/info`` (and its ``OPTIONS`` preflight),
``/sockjs/iframe*.html`` and, per session, ``/sockjs/<server>/<session>/<transport>``:

=================  ======  ===========================================================
transport          method  what
=================  ======  ===========================================================
``xhr``            POST    polling receiver: one frame per response (``OPTIONS`` too)
``xhr_streaming``  POST    streaming receiver: 2 KiB prelude, then a frame per line
``eventsource``    GET     streaming receiver: a server-sent event per frame
``htmlfile``       GET     streaming receiver: a ``<script>`` per frame (``?c=callback``)
``jsonp``          GET     polling receiver: ``callback("frame")`` (``?c=callback``)
``xhr_send``       POST    the client's messages (a JSON array); 204 (``OPTIONS`` too)
``jsonp_send``     POST    the same as a form field ``d``; 200 ``ok``
``websocket``      GET     the WebSocket upgrade (:mod:`.handler`); here only without one
=================  ======  ===========================================================

(sockjs-node's dispatcher in ``lib/listener.js``, the transports in ``lib/trans-*.js``.)
A streaming response ends after ``response_limit`` bytes (128 KiB) so that the client
opens a new one (and the browser frees the old).  CORS (``xhr*``, ``info``,
``eventsource``): ``Access-Control-Allow-Origin`` echoes ``Origin`` (with
``-Allow-Credentials: true``; ``*`` without one), ``-Allow-Headers`` echoes the request's
``Access-Control-Request-Headers``; preflights are cached for a year.  The origin was
already checked (:mod:`ddpctl.origins`, in :class:`.handler.Router`): a refused origin
never gets here.  ``JSESSIONID`` is set only with ``--sockjs-jsessionid`` (Meteor's
``USE_JSESSIONID``), for load balancers that keep sessions sticky by that cookie.

Receivers are WSGI responses whose iterable is a generator that blocks (on gevent) between
chunks; each chunk must reach the client when yielded (the server writes it before asking
for the next).  A client that goes away is seen when the server closes the generator
mid-response (``GeneratorExit``), or earlier, while the receiver waits, by the server's
``ddpctl.watch_disconnect`` (:meth:`.http.HTTPConnection.watch_disconnect`): its session
then ends, as in sockjs-node.
"""
from __future__ import annotations

import email.utils
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from . import sockjs
from .connection import DDPConnection
from .sockjs_session import Receiver, SessionRegistry, SockJSSession

if TYPE_CHECKING:
    from .runner import DDPServer

__all__ = ["SockJSApp", "RESPONSE_LIMIT"]

logger = logging.getLogger(__name__)
StartResponse = Callable[..., Any]
Headers = list[tuple[str, str]]
Environ = dict[str, Any]

RESPONSE_LIMIT = 128 << 10  # bytes of frames after which a streaming response ends (sockjs-node)
_YEAR = 365 * 24 * 3600
_NO_CACHE = ("Cache-Control", "no-store, no-cache, no-transform, must-revalidate, max-age=0")
_JAVASCRIPT = ("Content-Type", "application/javascript; charset=UTF-8")
_TEXT = "text/plain; charset=UTF-8"
_TRANSPORT = re.compile(r"^/sockjs/([^/.]+)/([^/.]+)/([a-z_]+)/?$")
_IFRAME = re.compile(r"^/sockjs/iframe[0-9a-z_.-]*\.html/?$")
# What each session path answers: method -> handler.
_ROUTES: dict[str, dict[str, str]] = {
    "xhr": {"POST": "_xhr", "OPTIONS": "_preflight"},
    "xhr_streaming": {"POST": "_xhr_streaming", "OPTIONS": "_preflight"},
    "xhr_send": {"POST": "_xhr_send", "OPTIONS": "_preflight"},
    "eventsource": {"GET": "_eventsource"},
    "htmlfile": {"GET": "_htmlfile"},
    "jsonp": {"GET": "_jsonp"},
    "jsonp_send": {"POST": "_jsonp_send"},
    "websocket": {"GET": "_websocket_without_upgrade"},
}


class SockJSApp:
    """The WSGI application for every path under ``/sockjs`` (the WebSocket upgrade aside).

    ``sessions`` is this process's :class:`.sockjs_session.SessionRegistry`.
    """

    def __init__(self, server: DDPServer, response_limit: int = RESPONSE_LIMIT) -> None:
        self._server = server
        self._config = server.config
        self.response_limit = response_limit
        self.sessions = SessionRegistry()
        self._refused_logged_at = 0.0  # the last "too many sessions" warning (one a minute)
        self._iframe_page, self._iframe_etag = sockjs.iframe_page()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path in ("/sockjs", "/sockjs/"):
            return self._dispatch({"GET": "_welcome", "HEAD": "_welcome"}, method, environ, start_response)
        if path in ("/sockjs/info", "/sockjs/info/"):
            return self._dispatch({"GET": "_info", "OPTIONS": "_info_preflight"}, method, environ,
                                  start_response)
        if _IFRAME.match(path):
            return self._dispatch({"GET": "_iframe"}, method, environ, start_response)
        match = _TRANSPORT.match(path)
        if match is not None and match.group(3) in _ROUTES:
            return self._dispatch(_ROUTES[match.group(3)], method, environ, start_response,
                                  match.group(2))
        return _reply(start_response, "404 Not Found", b"Not found\n")

    def _dispatch(self, routes: dict[str, str], method: str, environ: Environ,
                  start_response: StartResponse, *args: str) -> Iterable[bytes]:
        name = routes.get(method)
        if name is None:  # sockjs-node's webjs: the path exists, not with this method
            start_response("405 Method Not Allowed", [("Allow", ", ".join(routes)), ("Content-Length", "0")])
            return [b""]
        handler: Callable[..., Iterable[bytes]] = getattr(self, name)
        return handler(environ, start_response, *args)

    # -- headers (sockjs-node's filters) ------------------------------------------------

    def _sid(self, environ: Environ) -> Headers:
        """``h_sid``: the ``JSESSIONID`` cookie, set on every answer so that a load balancer
        may add its own; the client's value kept, else ``dummy``."""
        if not self._config.sockjs_jsessionid:
            return []
        value = "dummy"
        for part in environ.get("HTTP_COOKIE", "").split(";"):
            name, _, cookie = part.partition("=")
            if name.strip() == "JSESSIONID":
                value = cookie.strip() or value
        return [("Set-Cookie", f"JSESSIONID={value}; path=/")]

    @staticmethod
    def _cors(environ: Environ) -> Headers:
        origin = environ.get("HTTP_ORIGIN")
        headers = ([("Access-Control-Allow-Origin", origin), ("Access-Control-Allow-Credentials", "true")]
                   if origin and origin != "null" else [("Access-Control-Allow-Origin", "*")])
        headers.append(("Vary", "Origin"))
        requested = environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS")
        if requested:
            headers.append(("Access-Control-Allow-Headers", requested))
        return headers

    @staticmethod
    def _cache_for_a_year() -> Headers:
        expires = email.utils.formatdate(time.time() + _YEAR, usegmt=True)
        return [("Cache-Control", f"public, max-age={_YEAR}"), ("Expires", expires)]

    # -- fixed pages --------------------------------------------------------------------

    def _welcome(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        return _reply(start_response, "200 OK", sockjs.WELCOME)

    def _info(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        body = sockjs.info_body(websocket=True, cookie_needed=self._config.sockjs_jsessionid)
        return _reply(start_response, "200 OK", body, "application/json; charset=UTF-8",
                      self._cors(environ) + [_NO_CACHE])

    def _info_preflight(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        return self._options(environ, start_response, "OPTIONS, GET")

    def _preflight(self, environ: Environ, start_response: StartResponse,
                   session_id: str) -> Iterable[bytes]:
        return self._options(environ, start_response, "OPTIONS, POST")

    def _options(self, environ: Environ, start_response: StartResponse, methods: str) -> Iterable[bytes]:
        start_response("204 No Content", self._sid(environ) + self._cors(environ) + self._cache_for_a_year()
                       + [("Access-Control-Allow-Methods", methods), ("Access-Control-Max-Age", str(_YEAR))])
        return [b""]

    def _iframe(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("HTTP_IF_NONE_MATCH") == self._iframe_etag:
            start_response("304 Not Modified", [("ETag", self._iframe_etag)])
            return [b""]
        return _reply(start_response, "200 OK", self._iframe_page, "text/html; charset=UTF-8",
                      self._cache_for_a_year() + [("ETag", self._iframe_etag)], no_cache=False)

    def _websocket_without_upgrade(self, environ: Environ, start_response: StartResponse,
                                   session_id: str) -> Iterable[bytes]:
        return _reply(start_response, "400 Bad Request", b'Can "Upgrade" only to "WebSocket".')

    # -- receivers ----------------------------------------------------------------------

    def _xhr(self, environ: Environ, start_response: StartResponse, session_id: str) -> Iterable[bytes]:
        return self._receiver(environ, start_response, session_id, "xhr-polling",
                              self._cors(environ) + [_JAVASCRIPT], b"", sockjs.xhr_chunk, 1)

    def _xhr_streaming(self, environ: Environ, start_response: StartResponse,
                       session_id: str) -> Iterable[bytes]:
        return self._receiver(environ, start_response, session_id, "xhr-streaming",
                              self._cors(environ) + [_JAVASCRIPT], sockjs.XHR_STREAMING_PRELUDE,
                              sockjs.xhr_chunk, self.response_limit)

    def _eventsource(self, environ: Environ, start_response: StartResponse,
                     session_id: str) -> Iterable[bytes]:
        return self._receiver(environ, start_response, session_id, "eventsource",
                              self._cors(environ) + [("Content-Type", "text/event-stream")],
                              sockjs.EVENTSOURCE_PRELUDE, sockjs.eventsource_chunk, self.response_limit)

    def _htmlfile(self, environ: Environ, start_response: StartResponse,
                  session_id: str) -> Iterable[bytes]:
        callback = _callback(environ)
        if not isinstance(callback, str):
            return callback(start_response)
        return self._receiver(environ, start_response, session_id, "htmlfile",
                              [("Content-Type", "text/html; charset=UTF-8")],
                              sockjs.htmlfile_prelude(callback), sockjs.htmlfile_chunk, self.response_limit)

    def _jsonp(self, environ: Environ, start_response: StartResponse, session_id: str) -> Iterable[bytes]:
        callback = _callback(environ)
        if not isinstance(callback, str):
            return callback(start_response)
        return self._receiver(environ, start_response, session_id, "jsonp-polling",
                              [_JAVASCRIPT, ("X-Content-Type-Options", "nosniff")], b"",
                              lambda frame: sockjs.jsonp_chunk(callback, frame), 1)

    def _receiver(self, environ: Environ, start_response: StartResponse, session_id: str,
                  protocol: str, headers: Headers, prelude: bytes, wrap: Callable[[str], bytes],
                  limit: int) -> Iterable[bytes]:
        session = self.sessions.get(session_id)
        if session is None:
            if self._server.draining:
                return _reply(start_response, "503 Service Unavailable", b"Server shutting down\n")
            if len(self.sessions) >= self._config.max_sockjs_sessions:
                self._log_refusal()
                return _reply(start_response, "503 Service Unavailable", b"Too many SockJS sessions\n")
            session = self._open_session(session_id, protocol, environ)
        start_response("200 OK", self._sid(environ) + [_NO_CACHE] + headers)
        receiver = Receiver(limit)
        watch = environ.get("ddpctl.watch_disconnect")
        if watch is not None:  # a client gone while its receiver waits ends the session now
            watch(lambda: session.receiver_gone(receiver))
        return _receive(session, receiver, prelude, wrap)

    def _log_refusal(self) -> None:
        now = time.monotonic()
        if now - self._refused_logged_at >= 60:
            self._refused_logged_at = now
            logger.warning("refusing new SockJS sessions over HTTP: %d open (--max-sockjs-sessions); "
                           "WebSocket clients are not affected", len(self.sessions))

    def _open_session(self, session_id: str, protocol: str, environ: Environ) -> SockJSSession:
        config = self._config
        session = SockJSSession(self.sessions, session_id, protocol, config.sockjs_disconnect_delay,
                                config.receive_queue_bytes)
        # The connection keeps what it needs of the request that opened the session
        # (client address, headers such as the cookie of a Django session login).
        request = {key: value for key, value in environ.items() if isinstance(value, str)}
        session.start(DDPConnection(self._server, session, request).run)
        return session

    # -- the client's messages ----------------------------------------------------------

    def _xhr_send(self, environ: Environ, start_response: StartResponse,
                  session_id: str) -> Iterable[bytes]:
        headers = self._sid(environ) + [_NO_CACHE] + self._cors(environ)
        return self._send(environ, start_response, session_id, sockjs.decode_send_body, headers,
                          "204 No Content", b"")

    def _jsonp_send(self, environ: Environ, start_response: StartResponse,
                    session_id: str) -> Iterable[bytes]:
        headers = self._sid(environ) + [_NO_CACHE]
        return self._send(environ, start_response, session_id, sockjs.decode_jsonp_send_body, headers,
                          "200 OK", b"ok")

    def _send(self, environ: Environ, start_response: StartResponse, session_id: str,
              decode: Callable[[bytes, str, int | None], list[str]], headers: Headers, status: str,
              body: bytes) -> Iterable[bytes]:
        """A send request: parse (500), find the session (404), queue for its connection.

        The body may be as large as one WebSocket frame of the SockJS transport
        (:func:`sockjs.frame_limit`); a bigger one, or a message over ``--max-frame-size``,
        closes the session with 1009 like the WebSocket transport does.
        """
        limit = self._config.max_frame_size
        data = _read_body(environ, sockjs.frame_limit(limit))
        too_big = data is None
        messages: list[str] = []
        if not too_big:
            try:
                messages = decode(data or b"", environ.get("CONTENT_TYPE", ""), limit)
            except sockjs.PayloadError as exc:
                return _reply(start_response, "500 Internal Server Error", str(exc).encode(), extra=headers)
            except sockjs.MessageTooBig:
                too_big = True
        session = self.sessions.get(session_id)
        if session is None:
            return _reply(start_response, "404 Not Found", b"", extra=headers)
        if too_big:
            logger.warning("closing SockJS session %s: message over %d bytes", session_id, limit)
            session.close(1009, "Message too big")
            return _reply(start_response, "413 Payload Too Large", b"Message too big\n", extra=headers)
        session.deliver(messages, len(data or b""))
        if status.startswith("204"):
            start_response(status, headers + [("Content-Type", _TEXT)])
            return [b""]
        return _reply(start_response, status, body, extra=headers)


def _receive(session: SockJSSession, receiver: Receiver, prelude: bytes,
             wrap: Callable[[str], bytes]) -> Iterator[bytes]:
    """A receiver's response body: its prelude, then the session's frames until the
    response is full, the session closes, or another receiver is attached already (2010)."""
    attached = False
    aborted = True
    try:
        if prelude:
            yield prelude
        attached = session.attach(receiver)
        if not attached:
            yield wrap(sockjs.ANOTHER_CONNECTION if session.state != "closed"
                       else sockjs.close_frame(1002, "Connection interrupted"))
        else:
            while receiver.written < receiver.limit:
                frame = session.next_frame(receiver)
                if frame is None:
                    break
                chunk = wrap(frame)
                yield chunk
                session.frame_written(receiver, len(chunk))
        aborted = receiver.gone
    finally:
        if attached:
            session.detach(receiver, aborted)


def _callback(environ: Environ) -> str | Callable[[StartResponse], Iterable[bytes]]:
    """The ``c`` (or ``callback``) query parameter, or the 500 answer sockjs-node gives."""
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    values = query.get("c") or query.get("callback")
    if not values:
        return lambda start_response: _reply(start_response, "500 Internal Server Error",
                                             b'"callback" parameter required')
    if not sockjs.valid_callback(values[0]):
        return lambda start_response: _reply(start_response, "500 Internal Server Error",
                                             b'invalid "callback" parameter')
    return values[0]


def _read_body(environ: Environ, limit: int) -> bytes | None:
    """The request body, or ``None`` if it is longer than ``limit`` bytes."""
    try:
        declared = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return None
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    data = stream.read(limit + 1)
    return None if len(data) > limit else data


def _reply(start_response: StartResponse, status: str, body: bytes, content_type: str = _TEXT,
           extra: Headers | None = None, no_cache: bool = True) -> list[bytes]:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    if no_cache and not any(name == "Cache-Control" for name, _ in extra or ()):
        headers.append(_NO_CACHE)
    start_response(status, headers + (extra or []))
    return [body]
