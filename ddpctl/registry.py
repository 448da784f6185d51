"""The node and subscription registry: which ``ddpctl serve`` processes run, and their
live connections and subscriptions, as rows in PostgreSQL.

A node writes on its registry heartbeat (every few seconds), never per DDP message, and
then only the rows that differ from what it wrote last.  A node is live while its
heartbeat is younger than its ``heartbeat_timeout``; readers list only live nodes, and every
node deletes the rows of nodes that are past it, so a crashed process leaves no permanent
rows.  Plain SQL on a DB-API cursor: the server calls it from its database workers, the
CLI from a plain connection.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from psycopg2.extras import execute_values

__all__ = ["WRITE_NOW", "ConnectionEntry", "NodeInfo", "RegistryWriter", "SubscriptionEntry",
           "list_connections", "list_nodes", "list_subscriptions", "purge_stale_nodes",
           "request_fresh_rows"]

# The operator command (:mod:`ddpctl.control`) asking a node to write its rows now.
WRITE_NOW = "registry"

_LIVE = "n.heartbeat_at >= clock_timestamp() - make_interval(secs => n.heartbeat_timeout)"


@dataclass(frozen=True)
class NodeInfo:
    id: str
    host: str
    pid: int
    addresses: list[str]
    version: str
    heartbeat_timeout: float


class ConnectionEntry(NamedTuple):
    id: str
    remote_address: str | None
    user_id: str | None
    transport: str
    opened_at: datetime.datetime


class SubscriptionEntry(NamedTuple):
    connection: str
    sub_id: str
    publication: str
    params: str
    documents: int
    collections: list[str]
    started_at: datetime.datetime
    refresh: str = ""  # how its observer refreshes: "multiplexed", "alone: <why>", "" (no observer)


def purge_stale_nodes(cursor: Any) -> list[str]:
    """Delete the rows of nodes whose heartbeat is overdue; their ids."""
    cursor.execute(f"""
        WITH gone AS (DELETE FROM ddpctl_node n WHERE NOT ({_LIVE}) RETURNING id),
             c AS (DELETE FROM ddpctl_connection WHERE node IN (SELECT id FROM gone)),
             s AS (DELETE FROM ddpctl_subscription WHERE node IN (SELECT id FROM gone))
        SELECT id FROM gone""")
    return [r[0] for r in cursor.fetchall()]


@dataclass
class RegistryWriter:
    """Keeps one node's rows in step with its state, writing only what changed."""

    node: NodeInfo
    _connections: dict[str, ConnectionEntry] = field(default_factory=dict)
    _subscriptions: dict[tuple[str, str], SubscriptionEntry] = field(default_factory=dict)

    def register(self, cursor: Any) -> datetime.datetime:
        """Insert (or take back) this node's row and clear its old entries; its start time."""
        node = self.node
        cursor.execute("""
            INSERT INTO ddpctl_node (id, host, pid, addresses, version, started_at, heartbeat_at,
                                     heartbeat_timeout)
            VALUES (%s, %s, %s, %s, %s, clock_timestamp(), clock_timestamp(), %s)
            ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at
            RETURNING started_at""",
                       (node.id, node.host, node.pid, node.addresses, node.version, node.heartbeat_timeout))
        started_at = cursor.fetchone()[0]
        self._connections, self._subscriptions = {}, {}
        cursor.execute("DELETE FROM ddpctl_connection WHERE node = %s", (node.id,))
        cursor.execute("DELETE FROM ddpctl_subscription WHERE node = %s", (node.id,))
        return started_at

    def heartbeat(self, cursor: Any, connections: list[ConnectionEntry],
                  subscriptions: list[SubscriptionEntry]) -> int:
        """Refresh the heartbeat and write the differences; the number of rows written.

        If another node purged this one (a long pause), it registers again and rewrites all.
        """
        node_id = self.node.id
        cursor.execute("UPDATE ddpctl_node SET heartbeat_at = clock_timestamp() WHERE id = %s", (node_id,))
        if cursor.rowcount == 0:
            self.register(cursor)
        conns = {c.id: c for c in connections}
        subs = {(s.connection, s.sub_id): s for s in subscriptions}
        gone_conns = [k for k in self._connections if k not in conns]
        gone_subs = [k for k in self._subscriptions if k not in subs]
        new_conns = [c for k, c in conns.items() if self._connections.get(k) != c]
        new_subs = [s for k, s in subs.items() if self._subscriptions.get(k) != s]
        raw = getattr(cursor, "cursor", cursor)  # execute_values needs psycopg2's own cursor
        if gone_conns:
            cursor.execute("DELETE FROM ddpctl_connection WHERE id = ANY(%s)", (gone_conns,))
        if gone_subs:
            execute_values(raw, """DELETE FROM ddpctl_subscription s USING (VALUES %s) AS g(c, i)
                                   WHERE s.connection = g.c AND s.sub_id = g.i""", gone_subs)
        if new_conns:
            execute_values(raw, """
                INSERT INTO ddpctl_connection (id, node, remote_address, user_id, transport, opened_at)
                VALUES %s ON CONFLICT (id) DO UPDATE SET node = excluded.node,
                  remote_address = excluded.remote_address, user_id = excluded.user_id,
                  transport = excluded.transport, opened_at = excluded.opened_at""",
                           [(c.id, node_id, *c[1:]) for c in new_conns])
        if new_subs:
            execute_values(raw, """
                INSERT INTO ddpctl_subscription (connection, sub_id, node, publication, params, documents,
                                                 collections, started_at, refresh)
                VALUES %s ON CONFLICT (connection, sub_id) DO UPDATE SET node = excluded.node,
                  publication = excluded.publication, params = excluded.params,
                  documents = excluded.documents, collections = excluded.collections,
                  started_at = excluded.started_at, refresh = excluded.refresh""",
                           [(s.connection, s.sub_id, node_id, *s[2:]) for s in new_subs],
                           template="(%s, %s, %s, %s, %s, %s, %s::text[], %s, %s)")
        self._connections, self._subscriptions = conns, subs
        return len(gone_conns) + len(gone_subs) + len(new_conns) + len(new_subs)

    def unregister(self, cursor: Any) -> None:
        node_id = self.node.id
        cursor.execute("DELETE FROM ddpctl_subscription WHERE node = %s", (node_id,))
        cursor.execute("DELETE FROM ddpctl_connection WHERE node = %s", (node_id,))
        cursor.execute("DELETE FROM ddpctl_node WHERE id = %s", (node_id,))


# -- reading (the CLI) ------------------------------------------------------------------------

def _rows(cursor: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _node_match(node: str | None) -> tuple[str, list[Any]]:
    """``--node`` matches a node id, its host, or ``host:pid``."""
    if not node:
        return "", []
    return " AND (n.id = %s OR n.host = %s OR n.host || ':' || n.pid = %s)", [node, node, node]


def list_nodes(cursor: Any, include_stale: bool = False, node: str | None = None) -> list[dict[str, Any]]:
    """The nodes (live ones only unless ``include_stale``; ``node``: its id, host or ``host:pid``)."""
    where, args = _node_match(node)
    cursor.execute(f"""
        SELECT n.id, n.host, n.pid, n.addresses, n.version, n.started_at, n.heartbeat_at,
               n.heartbeat_timeout, ({_LIVE}) AS live,
               (SELECT count(*) FROM ddpctl_connection c WHERE c.node = n.id) AS connections,
               (SELECT count(*) FROM ddpctl_subscription s WHERE s.node = n.id) AS subscriptions
        FROM ddpctl_node n WHERE {'TRUE' if include_stale else _LIVE}{where}
        ORDER BY n.host, n.started_at""", args)
    return _rows(cursor)


def list_connections(cursor: Any, node: str | None = None, user: str | None = None,
                     id_prefix: str | None = None) -> list[dict[str, Any]]:
    where, args = _node_match(node)
    if id_prefix:
        where += " AND c.id LIKE %s || '%%'"
        args.append(id_prefix.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_"))
    if user is not None:
        where += " AND c.user_id IS NOT DISTINCT FROM %s"
        args.append(user or None)
    cursor.execute(f"""
        SELECT c.id, c.node, n.host || ':' || n.pid AS node_name, c.remote_address, c.user_id,
               c.transport, c.opened_at, n.heartbeat_at AS as_of,
               (SELECT count(*) FROM ddpctl_subscription s WHERE s.connection = c.id) AS subscriptions
        FROM ddpctl_connection c JOIN ddpctl_node n ON n.id = c.node
        WHERE {_LIVE}{where} ORDER BY c.opened_at, c.id""", args)
    return _rows(cursor)


def list_subscriptions(cursor: Any, node: str | None = None, user: str | None = None,
                       publication: str | None = None, collection: str | None = None) -> list[dict[str, Any]]:
    where, args = _node_match(node)
    if user is not None:
        where += " AND c.user_id IS NOT DISTINCT FROM %s"
        args.append(user or None)
    if publication:
        where += " AND s.publication = %s"
        args.append(publication)
    if collection:
        where += " AND %s = ANY(s.collections)"
        args.append(collection)
    cursor.execute(f"""
        SELECT s.node, n.host || ':' || n.pid AS node_name, s.connection, c.remote_address, c.user_id,
               s.sub_id, s.publication, s.params, s.documents, s.collections, s.started_at, s.refresh,
               n.heartbeat_at AS as_of
        FROM ddpctl_subscription s JOIN ddpctl_node n ON n.id = s.node
             JOIN ddpctl_connection c ON c.id = s.connection
        WHERE {_LIVE}{where} ORDER BY s.started_at, s.connection, s.sub_id""", args)
    return _rows(cursor)



def request_fresh_rows(cursor: Any, node: str | None,
                       timeout: float) -> tuple[set[str], list[dict[str, Any]]]:
    """Ask the live nodes (those ``node`` matches, if given) to write their rows now
    (:data:`WRITE_NOW`, through :mod:`ddpctl.control`) and wait up to ``timeout`` seconds
    for every answer.

    Returns ``(ids of the nodes that wrote their rows, the nodes that did not)``: the rows
    of the latter are as of their last heartbeat (``heartbeat_at``).  A node answering
    with an error counts as not answering.  ``timeout`` 0 asks nothing.  ``cursor`` must
    be in autocommit (the NOTIFY goes out at once, each poll sees new answers).
    """
    from . import control

    nodes = list_nodes(cursor, node=node)
    if not nodes or timeout <= 0:
        return set(), nodes
    wanted = {n["id"] for n in nodes}
    results = control.ask_nodes(cursor, WRITE_NOW, wanted, timeout)
    answered = {node_id for node_id, result in results.items() if node_id in wanted and "error" not in result}
    return answered, [n for n in nodes if n["id"] not in answered]
