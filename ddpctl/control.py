"""Operator commands to the serving nodes: close a connection, replay changes.

The CLI inserts a row in ``ddpctl_command`` and sends ``NOTIFY ddpctl_control`` as a
wake-up; each node it is for acts on it and inserts its answer in
``ddpctl_command_result``.  Because the row, not the NOTIFY, is the request, a node that
was reconnecting still finds it on its next registry heartbeat.
"""

from __future__ import annotations

import json
import time
from typing import Any

__all__ = [
    "CONTROL_CHANNEL",
    "COMMAND_TTL",
    "ask_nodes",
    "close_connections",
    "expire_commands",
    "pending_commands",
    "record_result",
    "send_command",
    "wait_for_results",
]

CONTROL_CHANNEL = "ddpctl_control"
COMMAND_TTL = 600  # seconds a command and its results are kept


def send_command(cursor: Any, kind: str, args: dict[str, Any], node: str | None = None) -> int:
    """Queue a command for ``node`` (or every node) and wake the nodes; its id."""
    cursor.execute(
        "INSERT INTO ddpctl_command (kind, node, args) VALUES (%s, %s, %s) RETURNING id",
        (kind, node, json.dumps(args)),
    )
    command_id = cursor.fetchone()[0]
    cursor.execute(f"NOTIFY {CONTROL_CHANNEL}")
    return command_id


def wait_for_results(
    cursor: Any,
    command_id: int,
    nodes: set[str],
    timeout: float,
) -> dict[str, dict[str, Any]]:
    """Answers of ``nodes`` (node id -> result), waiting up to ``timeout`` seconds for all."""
    results: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while True:
        cursor.execute("SELECT node, result FROM ddpctl_command_result WHERE command_id = %s", (command_id,))
        for node, result in cursor.fetchall():
            if node not in results:
                results[node] = _json(result)
        if nodes <= set(results) or time.monotonic() >= deadline:
            return results
        time.sleep(0.05)


def close_connections(
    cursor: Any,
    connections: list[tuple[str, str]],
    timeout: float,
) -> dict[str, dict[str, Any] | None]:
    """Ask the node of each ``(connection id, node id)`` to close that connection (code 1000,
    after its queued messages); each connection's answer: ``{"closed": true}``, ``{"closed":
    false}`` (already gone), ``{"error": ...}``, or ``None`` if its node did not answer
    within ``timeout`` seconds (one deadline for all).  ``cursor`` must be in autocommit."""
    commands = [(conn_id, node, send_command(cursor, "close", {"connection": conn_id}, node=node))
                for conn_id, node in connections]
    deadline = time.monotonic() + timeout
    answers: dict[str, dict[str, Any] | None] = {}
    for conn_id, node, command_id in commands:
        results = wait_for_results(cursor, command_id, {node}, max(0.0, deadline - time.monotonic()))
        answers[conn_id] = results.get(node)
    return answers


def pending_commands(cursor: Any, node: str, since: Any) -> list[tuple[int, str, dict[str, Any]]]:
    """Commands for ``node`` created since ``since`` that it has not answered, oldest first."""
    cursor.execute(
        """
        SELECT c.id, c.kind, c.args FROM ddpctl_command c
        WHERE (c.node IS NULL OR c.node = %s) AND c.created_at >= %s
          AND NOT EXISTS (SELECT 1 FROM ddpctl_command_result r WHERE r.command_id = c.id AND r.node = %s)
        ORDER BY c.id""",
        (node, since, node),
    )
    return [(cid, kind, _json(args)) for cid, kind, args in cursor.fetchall()]


def _json(value: Any) -> Any:
    # psycopg2 decodes jsonb itself, but Django's connections turn that off.
    return json.loads(value) if isinstance(value, str) else value


def record_result(cursor: Any, command_id: int, node: str, result: dict[str, Any]) -> None:
    cursor.execute(
        "INSERT INTO ddpctl_command_result (command_id, node, result) VALUES (%s, %s, %s) "
        "ON CONFLICT DO NOTHING",
        (command_id, node, json.dumps(result)),
    )


def expire_commands(cursor: Any) -> None:
    """Delete commands and results older than ``COMMAND_TTL``."""
    cursor.execute(
        "DELETE FROM ddpctl_command_result WHERE done_at < clock_timestamp() - make_interval(secs => %s)",
        (COMMAND_TTL,),
    )
    cursor.execute(
        "DELETE FROM ddpctl_command WHERE created_at < clock_timestamp() - make_interval(secs => %s)",
        (COMMAND_TTL,),
    )


def ask_nodes(cursor: Any, kind: str, node_ids: set[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Send ``kind`` (no arguments) to the nodes ``node_ids`` and wait up to ``timeout``
    seconds for their answers: ``{node id: result}`` of those that answered (a result may
    be ``{"error": ...}``).  Nothing is sent without nodes or with ``timeout`` <= 0."""
    if not node_ids or timeout <= 0:
        return {}
    only = next(iter(node_ids)) if len(node_ids) == 1 else None
    return wait_for_results(cursor, send_command(cursor, kind, {}, node=only), node_ids, timeout)
