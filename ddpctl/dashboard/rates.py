"""What ``ddpctl top`` shows: two snapshots of the nodes, made into rates and totals."""
from __future__ import annotations

from typing import Any

from .snapshot import Snapshot

__all__ = ["RATES", "dashboard"]

# rate name -> the counter of node_stats it comes from (dispatcher counters as "dispatcher.x")
RATES = {
    "messages_per_second": "messages_sent",
    "bytes_per_second": "bytes_sent",
    "received_per_second": "messages_received",
    "method_calls_per_second": "method_calls",
    "changes_per_second": "dispatcher.changes",
}


def _counter(stats: dict[str, Any], key: str) -> float | None:
    value: Any = stats
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _rate(before: dict[str, Any] | None, after: dict[str, Any], key: str) -> float | None:
    """Per second between two readings of one node, by the node's own clock; None without
    two readings of that process (a node that just appeared, or the registry's stand-in)."""
    if before is None or before.get("source") != "node" or after.get("source") != "node":
        return None
    elapsed = after["clock"] - before["clock"]
    start, end = _counter(before, key), _counter(after, key)
    if elapsed <= 0 or start is None or end is None:
        return None
    return max(0.0, (end - start) / elapsed)


def dashboard(before: Snapshot | None, after: Snapshot, top: int = 10) -> dict[str, Any]:
    """The JSON ``ddpctl top --json`` prints and the view draws::

        {"nodes": [{"node", "hostname", "pid", "source", "connections", "subscriptions",
                    "observers", "messages_per_second", "bytes_per_second",
                    "received_per_second", "method_calls_per_second", "changes_per_second",
                    "lag_seconds", "position", "ready", "buffered_bytes", "db_in_use",
                    "db_size", "errors"}, ...],          # by host, then pid
         "publications": [{"publication", "subscriptions", "observers", "documents",
                           "messages_per_second"}, ...],  # the ``top`` busiest
         "totals": {"nodes", "connections", "subscriptions", "observers",
                    "messages_per_second", "method_calls_per_second"},
         "interval": seconds between the snapshots, or None}

    A value a node cannot give (a registry stand-in, or a rate without two readings) is None.
    """
    rows = []
    publications: dict[str, dict[str, Any]] = {}
    for node_id, stats in after.nodes.items():
        previous = before.nodes.get(node_id) if before else None
        if previous is not None and previous.get("pid") != stats.get("pid"):
            previous = None
        dispatcher = stats.get("dispatcher") or {}
        db = (stats.get("db") or {}).get("user") or {}
        row = {
            "node": node_id, "hostname": stats.get("hostname"), "pid": stats.get("pid"),
            "source": stats.get("source"), "connections": stats.get("connections"),
            "subscriptions": stats.get("subscriptions"), "observers": stats.get("observers"),
            **{name: _rate(previous, stats, key) for name, key in RATES.items()},
            "lag_seconds": dispatcher.get("lag_seconds"), "position": dispatcher.get("position"),
            "ready": stats.get("ready"), "buffered_bytes": stats.get("buffered_bytes"),
            "db_in_use": db.get("in_use"), "db_size": db.get("size"), "errors": stats.get("errors"),
        }
        rows.append(row)
        old_pubs = (previous or {}).get("publications") or {}
        for name, entry in (stats.get("publications") or {}).items():
            total = publications.setdefault(name, {"publication": name, "subscriptions": 0, "observers": 0,
                                                   "documents": 0, "messages_per_second": None})
            for key in ("subscriptions", "observers", "documents"):
                total[key] += entry.get(key, 0)
            if previous is not None and previous.get("source") == "node":
                elapsed = stats["clock"] - previous["clock"]
                sent = entry.get("messages_sent", 0) - (old_pubs.get(name) or {}).get("messages_sent", 0)
                if elapsed > 0:
                    rate = max(0.0, sent) / elapsed
                    total["messages_per_second"] = (total["messages_per_second"] or 0.0) + rate
    rows.sort(key=lambda r: (str(r["hostname"]), r["pid"] or 0))
    busiest = sorted(publications.values(), key=lambda p: (-(p["messages_per_second"] or 0.0),
                                                           -p["subscriptions"], p["publication"]))

    def total(key: str) -> float | None:
        values = [r[key] for r in rows if r[key] is not None]
        return sum(values) if values else None

    return {
        "nodes": rows,
        "publications": busiest[:top],
        "totals": {"nodes": len(rows), "connections": total("connections"),
                   "subscriptions": total("subscriptions"), "observers": total("observers"),
                   "messages_per_second": total("messages_per_second"),
                   "method_calls_per_second": total("method_calls_per_second")},
        "interval": None if before is None else round(after.taken_at - before.taken_at, 3),
    }
