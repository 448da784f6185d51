"""``ddpctl serve`` configuration, separate from the CLI that fills it and the server that reads it."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_DB_CONNECTIONS", "REFRESH_CONCURRENCY", "SYSTEM_CONNECTIONS", "ServeConfig",
           "parse_listen", "parse_size"]

DEFAULT_DB_CONNECTIONS = 10  # the user lane (methods, publications, views): ``--db-connections``
REFRESH_CONCURRENCY = 2  # observer refreshes run at once, on the system lane
SYSTEM_CONNECTIONS = REFRESH_CONCURRENCY + 1  # the system lane: refreshes + one for the node agent


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT``, ``PORT`` or ``[IPv6]:PORT`` -> ``(host, port)``."""
    text = value.strip()
    host = "127.0.0.1"
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1:end + 2] != ":":
            raise ValueError(f"invalid listen address {value!r} (use [ADDR]:PORT)")
        host, port_text = text[1:end], text[end + 2:]
    elif ":" in text:
        host_part, _, port_text = text.rpartition(":")
        host = host_part or "0.0.0.0"
    else:
        port_text = text
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"invalid port in listen address {value!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in listen address {value!r}")
    return host, port


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_SIZE = re.compile(r"(\d+)\s*([KMG]?)(?:I?B)?", re.IGNORECASE)


def parse_size(value: str | int) -> int:
    """A byte count: ``65536``, ``512K``, ``64M``, ``1G`` (also ``64MiB``, ``64MB``; units of 1024).

    Raises ``ValueError`` for anything else.
    """
    if isinstance(value, int):
        return value
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"invalid size {value!r} (use a number of bytes, or a K, M or G suffix)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]


@dataclass
class ServeConfig:
    settings: str | None = None
    listen: list[tuple[str, int]] = field(default_factory=lambda: [("127.0.0.1", 8000)])
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    log_level: str = "info"
    max_frame_size: int = 1 << 20  # bytes of one DDP message (a raw WebSocket message, or
    # one message of a SockJS frame once unescaped); bigger closes the connection with 1009
    # permessage-deflate on WebSockets (raw and SockJS), on by default as in Meteor
    websocket_compression: bool = True
    heartbeat_interval: float = 15.0
    heartbeat_timeout: float = 15.0
    handshake_timeout: float = 45.0
    receive_queue_size: int = 1_000  # messages waiting for the processor before reading pauses
    receive_queue_bytes: int = 1 << 20  # frame bytes waiting before reading pauses
    max_subscriptions: int = 500  # active subscriptions per connection
    max_params_size: int = 64 << 10  # bytes of a subscription's EJSON params
    db_connections: int = DEFAULT_DB_CONNECTIONS  # the user lane's PostgreSQL connections
    # Bytes buffered for one client (queued text plus what the writer holds) before fan-out
    # disconnects it; work done for the client itself waits at a fraction of it instead.
    send_buffer_limit: int = 64 << 20
    send_timeout: float = 30.0  # seconds without write progress, with data buffered, before a close
    shutdown_timeout: float = 5.0
    legacy_server_id: bool = False
    node_heartbeat: float = 5.0  # registry heartbeat; a node is gone after 3 missed
    sockjs_heartbeat: float = 45.0  # SockJS ``h`` frame interval (Meteor's heartbeat_delay)
    # A SockJS session over HTTP with no receiver for this long ends (Meteor's disconnect_delay).
    sockjs_disconnect_delay: float = 60.0
    max_sockjs_sessions: int = 10_000  # SockJS sessions over HTTP at once; more: 503
    sockjs_jsessionid: bool = False  # set the JSESSIONID cookie (Meteor's USE_JSESSIONID)
    meteor_bundle: Any = None  # a loaded ddpctl.meteor.bundle.Bundle
    meteor_options: Any = None  # ddpctl.meteor.app.MeteorOptions
    meteor_watch: bool = True
    autoupdate_version: str | None = None
    # Origins allowed on /websocket and /sockjs (``--allowed-origin``); None: the
    # DDPCTL_ALLOWED_ORIGINS setting, else the site's own hosts (ddpctl.origins).
    allowed_origins: list[str] | None = None
    # The HTTP layer (ddpctl.server.http): seconds and bytes.
    header_timeout: float = 10.0  # a request head must arrive within this
    keepalive_timeout: float = 5.0  # an idle kept-alive connection is closed after this
    body_timeout: float = 30.0  # reading a request body without a byte for this fails
    max_request_line: int = 8192  # longer: 414
    max_header_size: int = 16384  # a longer request head: 431
    max_headers: int = 100  # more header fields: 431
    max_chunked_body: int = 100 << 20  # a larger chunked request body (buffered whole): 413
    # Trusted proxies (ddpctl.server.forwarded): the nearest N hops, and hops at these
    # addresses/CIDRs, may report the client in X-Forwarded-For/-Proto/-Host, Forwarded.
    forwarded_count: int = 0
    trusted_proxies: list[str] = field(default_factory=list)
    forwarded_header: str = "x-forwarded"  # or "forwarded" (RFC 7239): which family they write
    # Observability (ddpctl.server.health, ddpctl.server.metrics): paths on the main
    # listeners ("" turns one off), the readiness limit, and Prometheus metrics.
    liveness_path: str = "/healthz"
    readiness_path: str = "/readyz"
    ready_max_lag: float = 10.0  # seconds the dispatcher may be behind and the node still ready
    metrics: bool = True
    metrics_path: str = "/metrics"
    metrics_address: tuple[str, int] | None = None  # a listener of their own (then not on the main ones)
    metrics_multiprocess: bool = False  # serve --workers N: prometheus_client's multiprocess mode

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_certfile else "http"
