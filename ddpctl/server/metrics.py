"""Prometheus metrics of a node, with ``prometheus_client``.

Served at ``--metrics-path`` (``/metrics``) on the main listeners, or only on a listener
of its own with ``--metrics-address HOST:PORT``; ``--no-metrics`` turns them off.  Every
series carries ``node`` (the node id ``ddpctl nodes ls`` shows) and ``hostname``, so the
series of several nodes (hosts, or workers of one host) add up with ``sum by``.

Where the numbers come from (:mod:`.stats`): the hot path only adds to plain integers;
at each scrape :meth:`Metrics.update` reads them, and the server's state (connections,
subscriptions, observers, buffered bytes, database lanes, dispatcher), into the
``prometheus_client`` metrics.  Method and publication-start histograms are observed per
call.  The changelog's size is read from PostgreSQL at most every
:data:`CHANGELOG_EVERY` seconds (one query on the system lane, in the background: a scrape
never waits on the database).

``serve --workers N``: the kernel hands a scrape to any one worker (``SO_REUSEPORT``), so
each worker must be able to answer for all of them.  ddpctl uses ``prometheus_client``'s
multiprocess mode, its mechanism for pre-fork servers (gunicorn's): the parent sets
``PROMETHEUS_MULTIPROC_DIR`` before forking (:func:`enable_multiprocess`), each worker
writes its values to memory-mapped files there, refreshed every second
(:data:`SAMPLE_EVERY`) and at a scrape, and the worker that answers merges them all
(``MultiProcessCollector``).  Each worker is a node with its own id, so its series stay
apart (per-worker labels); gauges use the ``livesum`` mode and the parent removes a dead
worker's files (:func:`forget_process`), so a restarted worker's old series disappear as
a restarted single process's would.  Process metrics (``process_*``, ``python_gc_*``)
describe one process, so they are only exported without ``--workers``.
"""
from __future__ import annotations

import contextlib
import glob
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import gevent
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from .. import __version__
from .stats import counters, node_stats, timings

if TYPE_CHECKING:
    from .runner import DDPServer

__all__ = ["CHANGELOG_EVERY", "SAMPLE_EVERY", "Metrics", "enable_multiprocess", "forget_process"]

logger = logging.getLogger(__name__)
SAMPLE_EVERY = 1.0  # seconds between a worker's updates in multiprocess mode
CHANGELOG_EVERY = 10.0  # seconds between reads of the changelog's size
_NODE = ("node", "hostname")
_INFO = "1 for each node: its id, host, pid and ddpctl version."
StartResponse = Callable[..., Any]

# counter name -> (node_stats key, help)
_COUNTERS = {
    "messages_sent": ("messages_sent", "DDP messages written to clients (counted per socket write)."),
    "sent_bytes": ("bytes_sent", "UTF-8 bytes of the DDP messages sent, before WebSocket framing and "
                                 "compression."),
    "messages_received": ("messages_received", "DDP messages received from clients."),
    "connections_opened": ("connections_opened", "DDP connections accepted (WebSocket and SockJS)."),
    "method_errors": ("method_errors", "Method calls answered with an error (a Meteor.Error or 500)."),
    "publication_errors": ("publication_errors", "Subscriptions ended with an error (nosub with error)."),
    "slow_clients_closed": ("slow_clients_closed", "Connections closed for --send-buffer-limit or "
                                                   "--send-timeout."),
}


class Metrics:
    """The metrics of one server process (one node)."""

    def __init__(self, server: DDPServer, multiprocess: bool = False) -> None:
        self.server = server
        self.multiprocess = multiprocess
        self.registry = None if multiprocess else CollectorRegistry()
        r = self.registry
        mode = {"multiprocess_mode": "livesum"}
        self.labels = (server.node.id, socket.gethostname())
        if multiprocess:  # the merge adds "pid" itself (and drops any of ours, in other modes)
            self._info = Gauge("ddpctl_node_info", _INFO, [*_NODE, "version"], registry=r,
                               multiprocess_mode="liveall")
            self._info.labels(*self.labels, __version__).set(1)
        else:
            self._info = Gauge("ddpctl_node_info", _INFO, [*_NODE, "pid", "version"], registry=r)
            self._info.labels(*self.labels, str(os.getpid()), __version__).set(1)
        g = {name: Gauge(f"ddpctl_{name}", text, _NODE, registry=r, **mode) for name, text in (
            ("subscriptions", "Running subscriptions (universal ones included)."),
            ("observers", "Live observers (one per distinct publication, params and user cohort)."),
            ("send_buffer_bytes", "Bytes buffered for clients, not yet written to their sockets."),
            ("ready", "1 while the readiness endpoint answers 200."),
            ("dispatcher_connected", "1 while the change dispatcher holds its PostgreSQL LISTEN connection."),
            ("dispatcher_position", "The changelog position (ddpctl_change id) the dispatcher has read to."),
            ("dispatcher_lag_seconds", "Seconds the dispatcher is behind the newest commit, at most "
                                       "(0 while it waits, caught up, on a live connection)."),
            ("changelog_head_position", "The newest changelog position (highest ddpctl_change id)."),
            ("changelog_bytes", "Size of the changelog table with its indexes, in bytes."),
            ("changelog_rows", "Rows in the changelog (PostgreSQL's estimate, pg_class.reltuples)."),
        )}
        self._gauges = g
        self._connections = Gauge("ddpctl_connections", "Open DDP connections, by transport.",
                                  [*_NODE, "transport"], registry=r, **mode)
        self._db = Gauge("ddpctl_db_connections", "Database connections of a lane ('user': methods, "
                         "publications, views; 'system': observers and the node) by state: in_use, "
                         "max, waiting (greenlets or jobs waiting for one).",
                         [*_NODE, "lane", "state"], registry=r, **mode)
        self._pub_subs = Gauge("ddpctl_publication_subscriptions", "Running subscriptions, by publication.",
                               [*_NODE, "publication"], registry=r, **mode)
        self._pub_observers = Gauge("ddpctl_publication_observers", "Live observers, by publication.",
                                    [*_NODE, "publication"], registry=r, **mode)
        self._counters = {name: Counter(f"ddpctl_{name}", text, _NODE, registry=r)
                          for name, (_key, text) in _COUNTERS.items()}
        self._pub_messages = Counter("ddpctl_publication_messages", "Messages observers handed their "
                                     "subscribers (added/changed/removed), by publication.",
                                     [*_NODE, "publication"], registry=r)
        self._batches = Counter("ddpctl_dispatcher_batches", "Batches of changes read from the changelog.",
                                _NODE, registry=r)
        self._changes = Counter("ddpctl_dispatcher_changes", "Changes read from the changelog.", _NODE,
                                registry=r)
        self._reconnects = Counter("ddpctl_dispatcher_reconnects", "Times the dispatcher lost its LISTEN "
                                   "connection.", _NODE, registry=r)
        self._logs = Counter("ddpctl_log_records", "Log records at warning level and above (errors), by "
                             "level and logger.", [*_NODE, "level", "logger"], registry=r)
        self._methods = Histogram("ddpctl_method_duration_seconds", "Method calls and their latency: from "
                                  "the call's turn on its connection to its result being queued; outcome "
                                  "ok, error (a Meteor.Error) or internal_error (500).",
                                  [*_NODE, "method", "outcome"], registry=r)
        self._publications = Histogram("ddpctl_publication_start_seconds", "Subscription starts and their "
                                       "latency: the publication's code and a new observer's first "
                                       "queries (not sending the documents).",
                                       [*_NODE, "publication"], registry=r)
        self._last: dict[Any, float] = {}
        self._seen: dict[str, set[tuple[str, ...]]] = {}
        self._changelog_at = -CHANGELOG_EVERY
        self._changelog_head = 0
        self._changelog_reader: gevent.Greenlet | None = None
        self._sampler: gevent.Greenlet | None = None
        timings.append(self)

    # -- timings, per call (stats.TimingListener) ----------------------------------------

    def method(self, name: str, outcome: str, seconds: float) -> None:
        self._methods.labels(*self.labels, name, outcome).observe(seconds)

    def publication(self, name: str, seconds: float) -> None:
        self._publications.labels(*self.labels, name).observe(seconds)

    # -- reading the node's state ---------------------------------------------------------

    def update(self) -> None:
        """Bring every metric up to date with the node's counters and state."""
        s = node_stats(self.server)
        node = self.labels
        for name, (key, _text) in _COUNTERS.items():
            self._add(self._counters[name].labels(*node), ("c", name), s[key])
        dispatcher = s["dispatcher"]
        self._add(self._batches.labels(*node), "batches", dispatcher["batches"])
        self._add(self._changes.labels(*node), "changes", dispatcher["changes"])
        self._add(self._reconnects.labels(*node), "reconnects", dispatcher["reconnects"])
        for (level, logger_name), n in list(counters.log_records.items()):
            self._add(self._logs.labels(*node, level, logger_name), ("log", level, logger_name), n)
        g = self._gauges
        g["subscriptions"].labels(*node).set(s["subscriptions"])
        g["observers"].labels(*node).set(s["observers"])
        g["send_buffer_bytes"].labels(*node).set(s["buffered_bytes"])
        g["ready"].labels(*node).set(1 if s["ready"] else 0)
        g["dispatcher_connected"].labels(*node).set(1 if dispatcher["connected"] else 0)
        if dispatcher["position"] is not None:
            g["dispatcher_position"].labels(*node).set(dispatcher["position"])
            # The head is read every CHANGELOG_EVERY seconds; it is never behind what the
            # dispatcher has read (so head - position, "not read yet", is never negative).
            self._changelog_head = max(self._changelog_head, dispatcher["position"])
            g["changelog_head_position"].labels(*node).set(self._changelog_head)
        g["dispatcher_lag_seconds"].labels(*node).set(dispatcher["lag_seconds"])
        self._set_each(self._connections, "transports", {(k,): v for k, v in s["transports"].items()})
        db = s["db"]
        self._set_each(self._db, "db", {
            ("user", "in_use"): db["user"]["in_use"], ("user", "max"): db["user"]["size"],
            ("user", "waiting"): db["user"]["waiting"], ("system", "in_use"): db["system"]["busy"],
            ("system", "max"): db["system"]["size"], ("system", "waiting"): db["system"]["queued"]})
        pubs = s["publications"]
        self._set_each(self._pub_subs, "pub_subs", {(p,): v["subscriptions"] for p, v in pubs.items()})
        self._set_each(self._pub_observers, "pub_observers", {(p,): v["observers"] for p, v in pubs.items()})
        for name, entry in pubs.items():
            self._add(self._pub_messages.labels(*node, name), ("pub", name), entry["messages_sent"])
        self._update_changelog()

    def _add(self, child: Any, key: Any, total: float) -> None:
        """Move a counter to ``total`` (our counters only grow: add the difference)."""
        delta = total - self._last.get(key, 0)
        if delta > 0:
            child.inc(delta)
            self._last[key] = total

    def _set_each(self, gauge: Gauge, name: str, values: dict[tuple[str, ...], float]) -> None:
        """Set a labelled gauge's values; label sets no longer present go to 0."""
        seen = self._seen.setdefault(name, set())
        for labels in seen - set(values):
            gauge.labels(*self.labels, *labels).set(0)
        for labels, value in values.items():
            gauge.labels(*self.labels, *labels).set(value)
        seen.update(values)

    def _update_changelog(self) -> None:
        """Read the changelog's size in the background (a scrape never waits on the
        database: a lock on the table must not hang it); the values of the last read."""
        if time.monotonic() - self._changelog_at < CHANGELOG_EVERY or self._changelog_reader is not None:
            return
        self._changelog_at = time.monotonic()
        self._changelog_reader = gevent.spawn(self._read_changelog)

    def _read_changelog(self) -> None:
        try:
            head, size, rows = self.server.system_db.run(_changelog_size)
        except Exception as exc:  # the database may be away: the dispatcher's metrics say so
            logger.info("metrics: cannot read the changelog's size: %s: %s", type(exc).__name__,
                        str(exc).strip())
            self._changelog_at = -CHANGELOG_EVERY
            return
        finally:
            self._changelog_reader = None
        g = self._gauges
        self._changelog_head = max(self._changelog_head, head)
        g["changelog_head_position"].labels(*self.labels).set(self._changelog_head)
        g["changelog_bytes"].labels(*self.labels).set(size)
        g["changelog_rows"].labels(*self.labels).set(max(0, rows))

    # -- serving them -----------------------------------------------------------------------

    def start(self) -> None:
        """In multiprocess mode, update this worker's values every second (a scrape is
        answered by one worker, from every worker's files)."""
        if self.multiprocess:
            self._sampler = gevent.spawn(self._sample)

    def stop(self) -> None:
        for greenlet in (self._sampler, self._changelog_reader):
            if greenlet is not None:
                greenlet.kill(block=False)
        if self in timings:
            timings.remove(self)

    def _sample(self) -> None:
        while True:
            try:
                self.update()
            except Exception:
                logger.exception("metrics: updating this worker's values failed")
            gevent.sleep(SAMPLE_EVERY)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The metrics' text (Prometheus text format, or OpenMetrics if ``accept`` asks)
        and its content type."""
        self.update()
        encoder, content_type = choose_encoder(accept)
        return encoder(self._collector()), content_type

    def _collector(self) -> Any:
        if self.multiprocess:
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return registry
        return _Union([prometheus_client.REGISTRY, self.registry])  # process_*, python_gc_*, ours

    def app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI endpoint."""
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Length", "0")])
            return []
        body, content_type = self.exposition(environ.get("HTTP_ACCEPT", ""))
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store")])
        return [] if method == "HEAD" else [body]


class _Union:
    """Several registries as one collector (for ``generate_latest``)."""

    def __init__(self, registries: list[Any]) -> None:
        self._registries = registries

    def collect(self) -> Iterator[Any]:
        for registry in self._registries:
            yield from registry.collect()


def _changelog_size() -> tuple[int, int, float]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("""SELECT (SELECT coalesce(max(id), 0) FROM ddpctl_change),
                                 pg_total_relation_size('ddpctl_change'),
                                 (SELECT reltuples FROM pg_class WHERE oid = 'ddpctl_change'::regclass)""")
        return cursor.fetchone()


# -- serve --workers N: multiprocess mode, in the parent -------------------------------------

def enable_multiprocess() -> tuple[str, bool]:
    """Before forking the workers: make ``prometheus_client`` store values in files they
    share.  Uses ``PROMETHEUS_MULTIPROC_DIR`` if set (it must be empty at start, as
    prometheus_client requires), else a new temporary directory; ``(directory, created)``."""
    import tempfile

    from prometheus_client import values

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    created = not directory
    if created:
        directory = tempfile.mkdtemp(prefix="ddpctl-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    os.makedirs(directory, exist_ok=True)
    values.ValueClass = values.get_value_class()  # chosen at import; the variable is set now
    return directory, created


def forget_process(pid: int, directory: str) -> None:
    """A worker exited: remove its files.  Its series (labelled with its node id) end, as
    a single process's do when it restarts; live gauges first (``mark_process_dead``)."""
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid, directory)
    for path in glob.glob(os.path.join(directory, f"*_{pid}.db")):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
