"""One reading of every live node: its own counters, or the registry's row as a stand-in."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .. import control
from ..registry import list_nodes

__all__ = ["Snapshot", "take_snapshot"]


@dataclass
class Snapshot:
    """``nodes``: node id -> :func:`ddpctl.server.stats.node_stats` of a node that
    answered, or, for one that did not within the timeout, ``{"node", "hostname", "pid",
    "connections", "subscriptions", "source": "registry"}`` from its last heartbeat.
    ``taken_at``: this process's ``time.monotonic()``."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    taken_at: float = 0.0


def take_snapshot(cursor: Any, timeout: float) -> Snapshot:
    """Ask every live node for its counters, waiting up to ``timeout`` seconds for all.

    ``cursor``: on an autocommit connection (the command's NOTIFY goes out at once)."""
    registry = {row["id"]: row for row in list_nodes(cursor)}
    answers = control.ask_nodes(cursor, "stats", set(registry), timeout)
    snapshot = Snapshot(taken_at=time.monotonic())
    for node_id, row in registry.items():
        answer = answers.get(node_id)
        if answer is not None and "error" not in answer:
            snapshot.nodes[node_id] = {**answer, "source": "node"}
        else:  # an older ddpctl, or busy: what its last heartbeat wrote
            snapshot.nodes[node_id] = {
                "node": node_id, "hostname": row["host"], "pid": row["pid"], "version": row["version"],
                "connections": row["connections"], "subscriptions": row["subscriptions"],
                "source": "registry", "error": (answer or {}).get("error"),
            }
    return snapshot
