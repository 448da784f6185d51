"""This process's activity: counters kept on the hot path, and a snapshot of its state.

Two consumers read them: Prometheus metrics (:mod:`.metrics`) and ``ddpctl top``, which
asks every node for :func:`node_stats` through the control channel (command kind
``"stats"``, :mod:`ddpctl.control`).

Cost.  The hot path only adds to plain integers (:data:`counters`), once per socket
write or read batch, never per subscriber: a socket write of 200 messages is two
additions.  Everything else -- connections, subscriptions, observers, buffered bytes,
database lanes, the dispatcher -- is read from the server's state when a snapshot is
taken (a scrape, ``ddpctl top``'s once-a-second poll), not maintained as it changes.
Method and publication-start timings are per call (a call is ~1000x a counter update):
:func:`method_done` and :func:`publication_started` count them and pass them to the
timing listener the metrics install (:data:`timings`).
"""
from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Protocol

import gevent

from .. import __version__
from ..livedata.observer import observers
from .health import readiness

if TYPE_CHECKING:
    from .runner import DDPServer

__all__ = ["Counters", "LogCounter", "TimingListener", "counters", "method_done", "node_stats",
           "publication_started", "timings"]


class Counters:
    """Monotonic counts of this process (never reset; rates come from two readings)."""

    __slots__ = ("bytes_sent", "connections_opened", "log_records", "messages_received", "messages_sent",
                 "method_calls", "method_errors", "publication_errors", "publication_starts",
                 "slow_clients_closed")

    def __init__(self) -> None:
        self.messages_sent = 0  # DDP messages written to clients' sockets (or SockJS responses)
        self.bytes_sent = 0  # their UTF-8 bytes, before WebSocket framing and compression
        self.messages_received = 0  # DDP messages read from clients
        self.connections_opened = 0  # DDP connections accepted (WebSocket and SockJS)
        self.method_calls = 0
        self.method_errors = 0  # calls answered with an error (a MeteorError, or 500)
        self.publication_starts = 0
        self.publication_errors = 0  # subscriptions ended with an error (nosub with error)
        self.slow_clients_closed = 0  # closed for the send buffer limit or send timeout
        self.log_records: Counter[tuple[str, str]] = Counter()  # (level, logger) -> records


counters = Counters()


class TimingListener(Protocol):
    def method(self, name: str, outcome: str, seconds: float) -> None: ...
    def publication(self, name: str, seconds: float) -> None: ...


timings: list[TimingListener] = []  # the metrics' histograms, when metrics are on


def method_done(name: str, error: Any, seconds: float) -> None:
    """Count a method call that took ``seconds`` (from its turn on the connection's processor
    to its result being queued); ``error``: the ``MeteorError`` it was answered with, or None."""
    counters.method_calls += 1
    if error is None:
        outcome = "ok"
    else:
        counters.method_errors += 1
        outcome = "internal_error" if getattr(error, "error", None) == 500 else "error"
    for listener in timings:
        listener.method(name, outcome, seconds)


def publication_started(name: str, seconds: float) -> None:
    """Count a subscription's start: the publication's code and, for a new observer, its
    first queries (``seconds``); sending the documents is not included."""
    counters.publication_starts += 1
    for listener in timings:
        listener.publication(name, seconds)


class LogCounter(logging.Handler):
    """Counts log records at WARNING and above by level and logger (``errors`` in
    ``ddpctl top``, ``ddpctl_log_records_total`` in the metrics): every failure ddpctl
    handles is logged, so this counts them all, user code's tracebacks included."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        counters.log_records[(record.levelname.lower(), record.name)] += 1

    @classmethod
    def install(cls) -> None:
        """On the root logger, once per process."""
        root = logging.getLogger()
        if not any(isinstance(h, cls) for h in root.handlers):
            root.addHandler(cls())


def node_stats(server: DDPServer) -> dict[str, Any]:
    """A snapshot of this node: its counters and its current state, JSON-ready.

    Shape (counts are integers, ``clock`` is this process's ``time.monotonic()`` for rates
    between two snapshots, lag in seconds)::

        {"node", "hostname", "pid", "version", "clock", "uptime",
         "connections", "transports": {kind: n}, "subscriptions", "observers", "buffered_bytes",
         "messages_sent", "bytes_sent", "messages_received", "connections_opened",
         "method_calls", "method_errors", "publication_starts", "publication_errors",
         "slow_clients_closed", "warnings", "errors",
         "ready", "draining",
         "dispatcher": {"connected", "position", "lag_seconds", "batches", "changes", "reconnects"},
         "db": {"user": {"size", "in_use", "open", "waiting"}, "system": {"size", "busy", "queued"}},
         "publications": {name: {"subscriptions", "observers", "documents", "messages_sent"}}}

    Walks every connection once (yielding every 500): call it at most about once a second.
    """
    c = counters
    transports: Counter[str] = Counter()
    per_pub: dict[str, dict[str, int]] = {}
    subscriptions = buffered = 0
    for i, conn in enumerate(list(server.connections)):
        transports[conn.transport.kind] += 1
        buffered += conn.buffered_bytes
        for sub in list(conn.subscriptions()):
            subscriptions += 1
            _publication(per_pub, sub.name)["subscriptions"] += 1
        if i % 500 == 499:
            gevent.sleep(0)
    for observer in observers.all():
        entry = _publication(per_pub, observer.publication)
        entry["observers"] += 1
        entry["documents"] += observer.documents
    for name, sent in observers.messages_sent.items():
        _publication(per_pub, name)["messages_sent"] = sent
    dispatcher = server.dispatcher
    ready, health = readiness(server)  # its dispatcher block, extended below
    now = time.monotonic()
    warnings = sum(n for (level, _), n in c.log_records.items() if level == "warning")
    return {
        "node": server.node.id, "hostname": socket.gethostname(), "pid": os.getpid(), "version": __version__,
        "clock": now, "uptime": now - server.started_at,
        "connections": sum(transports.values()), "transports": dict(transports),
        "subscriptions": subscriptions, "observers": len(observers), "buffered_bytes": buffered,
        "messages_sent": c.messages_sent, "bytes_sent": c.bytes_sent,
        "messages_received": c.messages_received,
        "connections_opened": c.connections_opened, "method_calls": c.method_calls,
        "method_errors": c.method_errors, "publication_starts": c.publication_starts,
        "publication_errors": c.publication_errors, "slow_clients_closed": c.slow_clients_closed,
        "warnings": warnings, "errors": sum(c.log_records.values()) - warnings,
        "ready": ready, "draining": server.draining,
        "dispatcher": {**health["dispatcher"], "batches": dispatcher.batches,
                       "changes": dispatcher.changes, "reconnects": dispatcher.reconnects},
        "db": {"user": {"size": server.db.size, "in_use": server.db.leased,
                        "open": server.db.leased + server.db.idle, "waiting": server.db.waiting},
               "system": {"size": server.system_db.size, "busy": server.system_db.busy,
                          "queued": server.system_db.queued}},
        "publications": per_pub,
    }


def _publication(per_pub: dict[str, dict[str, int]], name: str) -> dict[str, int]:
    entry = per_pub.get(name)
    if entry is None:
        entry = per_pub[name] = {"subscriptions": 0, "observers": 0, "documents": 0, "messages_sent": 0}
    return entry
