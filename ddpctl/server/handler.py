"""Routing: DDP WebSockets and SockJS endpoints here, every other request to Django.

Raw DDP: ``/websocket``, ``/websocket/``, ``/sockjs/websocket``.  SockJS:
``/sockjs/<server>/<session>/websocket`` here, every other ``/sockjs`` path (info, the HTTP
transports) in :mod:`.sockjs_http`.  Each of them first passes the server's Origin check
(:mod:`ddpctl.origins`): a refused origin gets ``403 Forbidden`` before any upgrade.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from gevent import pywsgi

from . import sockjs
from .connection import DDPConnection, RawTransport, SockJSTransport
from .websocket import WebSocket, accept_key

if TYPE_CHECKING:
    from ..origins import OriginPolicy
    from .database_pool import DatabasePool
    from .runner import DDPServer

__all__ = ["DDPHandler", "Router", "websocket_route"]

logger = logging.getLogger(__name__)
_RAW_PATHS = {"/websocket", "/websocket/", "/sockjs/websocket", "/sockjs/websocket/"}
_SOCKJS_SESSION = re.compile(r"^/sockjs/[^/.]+/[^/.]+/websocket/?$")
_NO_CACHE = ("Cache-Control", "no-store, no-cache, must-revalidate, max-age=0")
_ORIGIN_REFUSED = b"Origin not allowed\n"
StartResponse = Callable[..., Any]


def websocket_route(path: str) -> str | None:
    """``"raw"``, ``"sockjs"`` or ``None`` for a request path."""
    if path in _RAW_PATHS:
        return "raw"
    if _SOCKJS_SESSION.match(path):
        return "sockjs"
    return None


class DDPHandler(pywsgi.WSGIHandler):
    """pywsgi's handler, taking over the socket for DDP WebSocket upgrades."""

    server: Any

    def run_application(self) -> None:
        route = websocket_route(self.environ.get("PATH_INFO", ""))
        if route is None:
            return super().run_application()
        ddp: DDPServer = self.server.ddp_server
        env = self.environ
        if not ddp.origins.check(env):
            return self._reply("403 Forbidden", _ORIGIN_REFUSED)
        upgrade = env.get("HTTP_UPGRADE", "").lower() == "websocket"
        connection = "upgrade" in env.get("HTTP_CONNECTION", "").lower()
        if env.get("REQUEST_METHOD") != "GET" or not upgrade or not connection:
            return self._reply("400 Bad Request", b'Can "Upgrade" only to "WebSocket".')
        if env.get("HTTP_SEC_WEBSOCKET_VERSION") not in ("13", "8"):
            return self._reply("426 Upgrade Required", b"Unsupported WebSocket version",
                               [("Sec-WebSocket-Version", "13")])
        key = env.get("HTTP_SEC_WEBSOCKET_KEY", "")
        if not key:
            return self._reply("400 Bad Request", b"Missing Sec-WebSocket-Key")
        if ddp.draining:
            return self._reply("503 Service Unavailable", b"Server shutting down")
        self.start_response("101 Switching Protocols", [
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_key(key))])
        self.write(b"")  # sends the 101 headers
        self.close_connection = True  # after the WebSocket, no more HTTP on this socket
        limit = ddp.config.max_frame_size
        ws = WebSocket(self.rfile.read1, self.socket.send, self.socket,
                       limit if route == "raw" else sockjs.frame_limit(limit))
        transport = RawTransport(ws) if route == "raw" else SockJSTransport(ws, limit)
        DDPConnection(ddp, transport, env).run()

    def _reply(self, status: str, body: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        self.start_response(status, [("Content-Type", "text/plain"),
                                     ("Content-Length", str(len(body)))] + (headers or []))
        self.write(body)


class Router:
    """The WSGI application: SockJS's HTTP endpoints, then Django."""

    def __init__(self, django_app: Callable[..., Iterable[bytes]], database: DatabasePool,
                 origins: OriginPolicy | None = None) -> None:
        self.django_app = django_app
        self._database = database
        self._origins = origins
        self.app: Callable[..., Iterable[bytes]] = self.django  # a Meteor bundle's layer goes in front
        self.sockjs: Callable[..., Iterable[bytes]] | None = None  # sockjs_http.SockJSApp

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/sockjs" or path.startswith("/sockjs/"):
            return self._sockjs(environ, start_response, path)
        if websocket_route(path):  # only reached without an Upgrade header
            return _plain(start_response, "400 Bad Request", b'Can "Upgrade" only to "WebSocket".')
        return self.app(environ, start_response)

    def _sockjs(self, environ: dict[str, Any], start_response: StartResponse, path: str) -> Iterable[bytes]:
        if self._origins is not None and not self._origins.check(environ):
            return _plain(start_response, "403 Forbidden", _ORIGIN_REFUSED)
        if self.sockjs is None:
            return _plain(start_response, "404 Not Found", b"Not found\n")
        return self.sockjs(environ, start_response)

    def django(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        # Views are user code: their database connection comes from the user lane's pool
        # (shared with DDP methods), so HTTP load cannot exhaust PostgreSQL.
        with self._database.lease():
            response = self.django_app(environ, start_response)
            try:
                return [b"".join(response)]
            finally:
                close = getattr(response, "close", None)
                if close is not None:
                    close()


def _plain(start_response: StartResponse, status: str, body: bytes,
           content_type: str = "text/plain; charset=UTF-8") -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                            _NO_CACHE])
    return [body]
