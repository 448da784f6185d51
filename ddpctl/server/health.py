"""Health endpoints for load balancers and orchestrators: liveness and readiness.

* Liveness (``--liveness-path``, ``/healthz`` by default): the process serves HTTP.
  Always ``200`` while it answers at all; an orchestrator restarts a process that stops
  answering.
* Readiness (``--readiness-path``, ``/readyz``): this node can serve live data.  ``200``
  when its change dispatcher holds its PostgreSQL ``LISTEN`` connection and is caught up
  with the changelog (at most ``--ready-max-lag`` seconds behind, see
  :meth:`.dispatcher.Dispatcher.lag`) and it is not shutting down; else ``503``.  A load
  balancer then sends new clients to other nodes while this one reconnects.

Both answer a small JSON object (``Cache-Control: no-store``) to ``GET`` and ``HEAD`` and
are served before Django and before the ``ALLOWED_HOSTS`` check (probes often use an IP
address as ``Host``), on the main listeners and on ``--metrics-address`` if given.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runner import DDPServer

__all__ = ["health_endpoints", "liveness", "readiness"]

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def liveness(server: DDPServer) -> dict[str, Any]:
    """``{"status": "ok", "node", "pid", "uptime_seconds"}``."""
    return {"status": "ok", "node": server.node.id, "pid": os.getpid(),
            "uptime_seconds": round(time.monotonic() - server.started_at, 3)}


def readiness(server: DDPServer) -> tuple[bool, dict[str, Any]]:
    """Whether this node is ready, and why not: ``(ready, body)`` with body
    ``{"status": "ready"|"not ready", "problems": [str], "node", "draining",
    "dispatcher": {"connected", "position", "lag_seconds"}}``."""
    dispatcher = server.dispatcher
    lag = dispatcher.lag()
    limit = server.config.ready_max_lag
    problems = []
    if server.draining:
        problems.append("shutting down")
    if not dispatcher.connected:
        problems.append("the change dispatcher is not connected to PostgreSQL (LISTEN); reconnecting")
    elif lag > limit:
        problems.append(f"the change dispatcher is {lag:.1f} s behind the changelog (limit {limit:g} s)")
    reader = dispatcher.reader
    return not problems, {
        "status": "not ready" if problems else "ready", "problems": problems, "node": server.node.id,
        "draining": server.draining,
        "dispatcher": {"connected": dispatcher.connected, "position": reader.position if reader else None,
                       "lag_seconds": round(lag, 3)},
    }


def health_endpoints(server: DDPServer) -> dict[str, WSGIApp]:
    """The configured paths and their WSGI apps (an empty path turns one off)."""
    config = server.config
    endpoints: dict[str, WSGIApp] = {}
    if config.liveness_path:
        endpoints[config.liveness_path] = _json_endpoint(lambda: (True, liveness(server)))
    if config.readiness_path:
        endpoints[config.readiness_path] = _json_endpoint(lambda: readiness(server))
    return endpoints


def _json_endpoint(check: Callable[[], tuple[bool, dict[str, Any]]]) -> WSGIApp:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            body = b'{"error": "method not allowed"}\n'
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), *_headers(body)])
            return [body]
        ok, result = check()
        body = json.dumps(result).encode() + b"\n"
        start_response("200 OK" if ok else "503 Service Unavailable", _headers(body))
        return [] if method == "HEAD" else [body]

    return app


def _headers(body: bytes) -> list[tuple[str, str]]:
    return [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store")]
