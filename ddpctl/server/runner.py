"""The server process: bind, serve, and shut down gracefully on SIGTERM/SIGINT.

Database work runs in two lanes with separate connections:

* the user lane (:class:`.database_pool.DatabasePool`, ``server.db``): methods,
  publication starts, stop callbacks, Django views, each on its caller's greenlet, holding
  at most ``--db-connections`` PostgreSQL connections between them;
* the system lane (:class:`.database_workers.DatabaseWorkers`, ``server.system_db``):
  observer refreshes (at most ``config.REFRESH_CONCURRENCY`` at once) and the node agent
  (registry heartbeat, operator commands, retention), on ``config.SYSTEM_CONNECTIONS``
  workers, so one worker is always free for the node agent.

With the dispatcher's LISTEN connection, one process holds at most
``--db-connections + SYSTEM_CONNECTIONS + 1`` PostgreSQL connections (default 10 + 3 + 1),
whatever the number of clients.

HTTP is served by :mod:`.http` (h11 on a gevent ``StreamServer``).  Shutdown (like
uvicorn): stop accepting, close idle kept-alive HTTP connections and every DDP connection
(1001, after its queued messages), wait up to ``shutdown_timeout`` for them and for HTTP
requests being answered, then stop the database workers.
"""
from __future__ import annotations

import errno
import logging
import signal
import socket
import ssl
import time
from typing import TYPE_CHECKING

import gevent
from gevent.event import Event

from ..config import REFRESH_CONCURRENCY, SYSTEM_CONNECTIONS
from ..origins import OriginPolicy
from . import collector
from .database_pool import DatabasePool
from .database_workers import DatabaseWorkers
from .dispatcher import Dispatcher
from .django_static import static_files_app
from .forwarded import ProxyPolicy
from .handler import DDPHandler, EndpointsApp, Router
from .health import health_endpoints
from .hosts import HostPolicy
from .http import HTTPLimits, HTTPServer
from .node import NodeAgent
from .open_files import raise_open_file_limit
from .sockjs_http import SockJSApp
from .stats import LogCounter

if TYPE_CHECKING:
    from ..config import ServeConfig
    from .connection import DDPConnection

__all__ = ["DDPServer", "bind_sockets", "load_ssl_context"]

logger = logging.getLogger(__name__)


def load_ssl_context(certfile: str, keyfile: str | None) -> ssl.SSLContext:
    """A server TLS context; ``OSError``/``ssl.SSLError`` for unreadable or invalid files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


def bind_sockets(addresses: list[tuple[str, int]], reuse_port: bool = False) -> list[socket.socket]:
    """Bound sockets for every address; ``OSError`` (e.g. port in use) if one fails.

    They listen only once :meth:`DDPServer.serve` has its signal handlers in place, so a
    client (or a test) that sees the port open can rely on graceful shutdown.
    """
    sockets: list[socket.socket] = []
    try:
        for host, port in addresses:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:  # each worker process binds its own socket; the kernel balances
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                hint = (" (is another server, perhaps ddpctl serve, running on it? Stop it, or "
                        "choose another port with -l/--listen)") if exc.errno == errno.EADDRINUSE else ""
                raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class DDPServer:
    backlog = 2048

    def __init__(self, config: ServeConfig, sockets: list[socket.socket],
                 ssl_context: ssl.SSLContext | None = None,
                 metrics_sockets: list[socket.socket] | None = None) -> None:
        from django.core.wsgi import get_wsgi_application
        from django.db import connections

        raise_open_file_limit()
        self.config = config
        self.started_at = time.monotonic()
        self.connections: set[DDPConnection] = set()
        self.draining = False
        self.db = DatabasePool(config.db_connections)
        self.system_db = DatabaseWorkers(SYSTEM_CONNECTIONS)
        params = connections["default"].get_connection_params()
        params.pop("cursor_factory", None)
        self.node = NodeAgent(self, config.node_heartbeat)
        self.dispatcher = Dispatcher(params, self.system_db, REFRESH_CONCURRENCY, on_control=self.node.wake)
        self.origins = OriginPolicy.from_settings(config.allowed_origins)
        self.proxies = ProxyPolicy.parse(config.forwarded_count, config.trusted_proxies,
                                         config.forwarded_header)
        self.hosts = HostPolicy.from_settings()
        app = Router(get_wsgi_application(), self.db, self.origins, self.proxies, self.hosts)
        static = static_files_app()
        if static is not None:
            app.static, app.static_prefix = static
        app.sockjs = self.sockjs = SockJSApp(self)  # SockJS's HTTP transports and their sessions
        self.meteor = None
        if config.meteor_bundle is not None:
            from .meteor import MeteorService

            self.meteor = MeteorService(config.meteor_bundle, config.meteor_options, app.django,
                                        watch=config.meteor_watch,
                                        autoupdate_version=config.autoupdate_version, hosts=self.hosts)
            app.app = self.meteor.app
            if not config.meteor_options.root_url and self.hosts.wildcard:
                logger.warning("ALLOWED_HOSTS allows any host: ROOT_URL comes from the server's own address, "
                               "not from the request's Host; pass --root-url")
        limits = HTTPLimits(header_timeout=config.header_timeout, keepalive_timeout=config.keepalive_timeout,
                            body_timeout=config.body_timeout, send_timeout=config.send_timeout,
                            max_request_line=config.max_request_line,
                            max_header_size=config.max_header_size, max_headers=config.max_headers,
                            max_chunked_body=config.max_chunked_body)
        self._servers: list[HTTPServer] = []
        for sock in sockets:
            server = HTTPServer(sock, app, limits, connection_class=DDPHandler, ssl_context=ssl_context)
            server.ddp_server = self
            self._servers.append(server)
        # Observability: health endpoints and Prometheus metrics (health.py, metrics.py),
        # answered before Django, on the main listeners and/or a metrics listener of their own.
        LogCounter.install()
        health = health_endpoints(self)
        endpoints = health
        self.metrics = None
        if config.metrics:
            from .metrics import Metrics

            self.metrics = Metrics(self, multiprocess=config.metrics_multiprocess)
            endpoints = {**health, config.metrics_path: self.metrics.app}
        # With --metrics-address, metrics are served only there; health on both.
        app.endpoints = health if metrics_sockets else endpoints
        self._main_servers = len(self._servers)  # then the metrics listeners
        for sock in metrics_sockets or ():
            self._servers.append(HTTPServer(sock, EndpointsApp(endpoints), limits))
        self._sockets = [*sockets, *(metrics_sockets or ())]
        self._stop = Event()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [s.address[:2] for s in self._servers[:self._main_servers]]

    def _url(self, host: str, port: int) -> str:
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        shown = f"[{host}]" if ":" in host else host
        return f"{self.config.scheme}://{shown}:{port}"

    def request_shutdown(self, signum: int | None = None) -> None:
        if self._stop.is_set():
            return
        name = signal.Signals(signum).name if signum else "request"
        logger.info("shutting down (%s)", name)
        self._stop.set()

    def serve(self) -> None:
        """Serve until SIGTERM/SIGINT (or ``request_shutdown``), then shut down."""
        handlers = [gevent.signal_handler(sig, self.request_shutdown, sig)
                    for sig in (signal.SIGTERM, signal.SIGINT)]
        try:
            self.dispatcher.start()
            if self.meteor is not None:
                self.meteor.start()
            ticker = gevent.spawn(self._tick_connections)
            # No connection before the dispatcher has its changelog position: a subscription
            # made earlier could miss changes committed in between (dispatcher docstring).
            gevent.wait([self.dispatcher.ready, self._stop], count=1)
            if self._stop.is_set():
                return
            for sock in self._sockets:
                sock.listen(self.backlog)
            for server in self._servers:
                server.start()
            collector.tune()  # start-up objects frozen, fewer young collections (collector.py)
            if self.metrics is not None:
                self.metrics.start()
            self.node.start([self._url(host, port) for host, port in self.addresses])
            self._stop.wait()
        finally:
            for handler in handlers:
                handler.cancel()
            ticker.kill(block=False)
            self.shutdown()

    def _tick_connections(self) -> None:
        """One loop for every connection's heartbeat (not a greenlet per connection)."""
        config = self.config
        periods = [1.0] + [p / 4 for p in (config.heartbeat_interval, config.heartbeat_timeout,
                                           config.sockjs_heartbeat) if p > 0]
        period = max(0.01, min(periods))
        while True:
            gevent.sleep(period)
            now = time.monotonic()
            for i, conn in enumerate(list(self.connections)):
                conn.tick(now)
                if i % 500 == 499:
                    gevent.sleep(0)  # 10,000 connections must not stall delivery

    def shutdown(self) -> None:
        self.draining = True
        for server in self._servers:
            server.close()  # stop accepting; the listening socket goes away
            server.close_idle()  # kept-alive connections waiting for a request
        conns = list(self.connections)
        if conns:
            logger.info("closing %d DDP connection(s)", len(conns))
        for conn in conns:
            conn.close(1001, "Server shutting down")
        deadline = gevent.Timeout(self.config.shutdown_timeout, False)
        with deadline:
            # DDP connections, HTTP requests being answered, and SockJS sessions over HTTP
            # until the next poll took the close frame, finish.
            while (self.connections or self.sockjs.sessions.closing()
                   or any(server.busy for server in self._servers)):
                gevent.sleep(0.02)
        for server in self._servers:
            server.stop(timeout=0.5)
        self.node.stop()
        if self.metrics is not None:
            self.metrics.stop()
        if self.meteor is not None:
            self.meteor.stop()
        self.dispatcher.stop()
        self.system_db.stop(timeout=1.0)
        self.db.close()
        logger.info("stopped")
