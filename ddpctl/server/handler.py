"""Routing: DDP WebSockets and SockJS endpoints here, every other request to Django.

Raw DDP: ``/websocket``, ``/websocket/``, ``/sockjs/websocket``.  SockJS:
``/sockjs/<server>/<session>/websocket`` here, every other ``/sockjs`` path (info, the HTTP
transports) in :mod:`.sockjs_http`.  Each of them first passes the server's Origin check
(:mod:`ddpctl.origins`): a refused origin gets ``403 Forbidden`` before any upgrade.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from . import hosts, sockjs
from .connection import DDPConnection, RawTransport, SockJSTransport
from .deflate import DeflateParams, negotiate
from .http import FileWrapper, HTTPConnection
from .websocket import WebSocket, accept_key

if TYPE_CHECKING:
    from ..origins import OriginPolicy
    from .database_pool import DatabasePool
    from .forwarded import ProxyPolicy
    from .hosts import HostPolicy
    from .runner import DDPServer

__all__ = ["DDPHandler", "EndpointsApp", "Router", "upgrade_headers", "websocket_route"]

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


def upgrade_headers(key: str, extension_offer: str | None = None
                    ) -> tuple[list[tuple[str, str]], DeflateParams | None]:
    """The headers of the ``101 Switching Protocols`` answer to a WebSocket upgrade
    (RFC 6455 4.2.2), the one place they are built, and the permessage-deflate parameters
    agreed from ``extension_offer`` (``Sec-WebSocket-Extensions``; ``None``: no compression)."""
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
               ("Sec-WebSocket-Accept", accept_key(key))]
    extensions, deflate = negotiate(extension_offer) or (None, None)
    if extensions:
        headers.append(("Sec-WebSocket-Extensions", extensions))
    return headers, deflate


class DDPHandler(HTTPConnection):
    """An HTTP connection that takes over its socket for DDP WebSocket upgrades."""

    def handle_request(self, environ: dict[str, Any]) -> None:
        route = websocket_route(environ.get("PATH_INFO", ""))
        if route is None:
            return super().handle_request(environ)
        ddp: DDPServer = self.server.ddp_server
        env = environ
        ddp.proxies.apply(env)  # trusted proxies: REMOTE_ADDR, wsgi.url_scheme (forwarded.py)
        if not ddp.hosts.allows(env):
            return self._reply("400 Bad Request", hosts.REFUSED)
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
        offer = env.get("HTTP_SEC_WEBSOCKET_EXTENSIONS") if ddp.config.websocket_compression else None
        headers, deflate = upgrade_headers(key, offer)
        read = self.switch_protocols(headers)  # after it, no more HTTP here
        # Without TLS, an idle connection has no greenlet: an io watcher reads its socket
        # (DDPConnection.serve_watched) and this HTTP connection (h11 state, environ) ends.
        # An SSL socket may hold decrypted bytes its fd does not show: it is read blocking.
        read_ready, end = (None, None) if self.server.tls else self.hand_over(read)
        limit = ddp.config.max_frame_size
        try:
            ws = WebSocket(read, self.socket.send, self.socket,
                           limit if route == "raw" else sockjs.frame_limit(limit), deflate,
                           read_ready=read_ready)
            transport = RawTransport(ws) if route == "raw" else SockJSTransport(ws, limit)
            connection = DDPConnection(ddp, transport, env)
        except BaseException:
            if end is not None:
                end()
            raise
        if end is not None:
            connection.serve_watched(self.socket.fileno(), end)
            return
        try:
            connection.run()
        finally:
            self.log_upgrade_end()

    def _reply(self, status: str, body: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        def answer(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
            start_response(status, [("Content-Type", "text/plain"),
                                    ("Content-Length", str(len(body)))] + (headers or []))
            return [body]

        self.run_application(answer, self.environ)


class Router:
    """The WSGI application: SockJS's HTTP endpoints, then Django."""

    def __init__(self, django_app: Callable[..., Iterable[bytes]], database: DatabasePool,
                 origins: OriginPolicy | None = None, proxies: ProxyPolicy | None = None,
                 hosts: HostPolicy | None = None) -> None:
        self.django_app = django_app
        self._database = database
        self._origins = origins
        self._proxies = proxies
        self._hosts = hosts
        self.static: Callable[..., Iterable[bytes]] | None = None  # Django's static files (django_static.py)
        self.static_prefix = ""
        self.app: Callable[..., Iterable[bytes]] = self.django  # a Meteor bundle's layer goes in front
        self.sockjs: Callable[..., Iterable[bytes]] | None = None  # sockjs_http.SockJSApp
        # Exact paths answered first, before the Host check (probes use IP addresses): the
        # health endpoints and /metrics (health.py, metrics.py).
        self.endpoints: dict[str, Callable[..., Iterable[bytes]]] = {}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        endpoint = self.endpoints.get(path)
        if endpoint is not None:
            return endpoint(environ, start_response)
        if self._proxies is not None:
            self._proxies.apply(environ)  # trusted proxies: REMOTE_ADDR, wsgi.url_scheme (forwarded.py)
        if self._hosts is not None and not self._hosts.allows(environ):
            return _plain(start_response, "400 Bad Request", hosts.REFUSED)
        if self.static is not None and path.startswith(self.static_prefix):
            return self.static(environ, start_response)
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
        """Django's answer, streamed.

        Views are user code: their database connection comes from the user lane's pool
        (shared with DDP methods), so HTTP load cannot exhaust PostgreSQL.  The view runs
        in one lease; the response body is then produced chunk by chunk, each chunk in a
        lease of its own, and written to the client outside any lease: a slow client never
        holds a pooled connection, and a streaming generator that queries the database gets
        a connection for each chunk it computes (a connection is taken only on a query).
        So a generator must not keep a cursor open across its ``yield`` (e.g. iterate a
        ``QuerySet.iterator()``): fetch the rows of each chunk within it.  A
        ``FileResponse`` comes back as the server's ``wsgi.file_wrapper`` and is read
        in blocks by the server, with no lease.
        """
        with self._database.lease():
            response = self.django_app(environ, start_response)
        if isinstance(response, FileWrapper):
            return response
        return _LeasedIterable(response, self._database)


class EndpointsApp:
    """The WSGI application of a ``--metrics-address`` listener: its endpoints, else 404."""

    def __init__(self, endpoints: dict[str, Callable[..., Iterable[bytes]]]) -> None:
        self.endpoints = endpoints

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        endpoint = self.endpoints.get(environ.get("PATH_INFO", ""))
        if endpoint is None:
            return _plain(start_response, "404 Not Found", b"Not found\n")
        return endpoint(environ, start_response)


class _LeasedIterable:
    """A response iterable whose every step (and ``close()``) runs in a database lease."""

    def __init__(self, response: Iterable[bytes], database: DatabasePool) -> None:
        self._response = response
        self._database = database

    def __iter__(self) -> Iterator[bytes]:
        iterator = iter(self._response)
        lease = self._database.lease
        while True:
            with lease():
                chunk = next(iterator, None)
            if chunk is None:
                return
            yield chunk

    def close(self) -> None:
        close = getattr(self._response, "close", None)
        if close is not None:
            with self._database.lease():
                close()


def _plain(start_response: StartResponse, status: str, body: bytes,
           content_type: str = "text/plain; charset=UTF-8") -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                            _NO_CACHE])
    return [body]
