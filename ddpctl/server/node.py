"""This process as a node: its registry heartbeat, operator commands, changelog retention.

Every ``heartbeat`` seconds the node writes what changed in its connections and
subscriptions (:mod:`ddpctl.registry`) and deletes the rows of nodes that missed theirs.
Operator commands (:mod:`ddpctl.control`; ``registry``: write the registry rows now, for a
fresh ``subs/conns ls``) are run when the dispatcher hears
``NOTIFY ddpctl_control``, and on every heartbeat in case that NOTIFY was missed.  Once an
hour it deletes changes older than the changelog retention.

All of it runs on the system lane (``server.system_db``), which user code never occupies:
slow methods or publications cannot age the heartbeat or hold up an operator command.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import Event

from .. import __version__, control
from ..ddp.random import random_id
from ..livedata import changelog
from ..livedata.collection import collections
from ..registry import WRITE_NOW, NodeInfo, RegistryWriter, purge_stale_nodes
from .stats import node_stats

if TYPE_CHECKING:
    from .runner import DDPServer

__all__ = ["NodeAgent"]

logger = logging.getLogger(__name__)
PRUNE_EVERY = 3600.0
_DRY_RUN_LISTED = 1000  # recipients a dry run reports one by one


class NodeAgent:
    def __init__(self, server: DDPServer, heartbeat: float) -> None:
        self.server = server
        self.heartbeat = heartbeat
        self.writer: RegistryWriter | None = None
        self.id = random_id(8)  # known from the start: metrics label their series with it
        self._since: datetime.datetime | None = None
        self._wake = Event()
        self._greenlet: gevent.Greenlet | None = None
        self._last_prune = -PRUNE_EVERY

    def start(self, addresses: list[str]) -> None:
        info = NodeInfo(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            addresses=addresses,
            version=__version__,
            heartbeat_timeout=round(3 * self.heartbeat, 3),
        )
        self.writer = RegistryWriter(info)
        self._greenlet = gevent.spawn(self._run)

    def wake(self) -> None:
        """An operator command may be waiting (``NOTIFY ddpctl_control``)."""
        self._wake.set()

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=2)
        if self.writer is not None:  # even if registering was cut short: its INSERT may have run
            try:
                self.server.system_db.run(self._in_transaction, self.writer.unregister)
            except Exception as exc:  # the database may be gone; the rows expire anyway
                logger.warning("could not remove this node from the registry: %s", exc)

    # -- the loop -----------------------------------------------------------------------

    def _run(self) -> None:
        next_beat = 0.0
        while True:
            self._wake.wait(timeout=max(0.0, next_beat - time.monotonic()))
            self._wake.clear()
            try:
                if self._since is None:
                    self._since = self.server.system_db.run(self._in_transaction, self.writer.register)
                    logger.info("registered as node %s", self.id)
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.heartbeat
                    self._beat()
                self._run_commands()
                if time.monotonic() - self._last_prune >= PRUNE_EVERY:
                    self._last_prune = time.monotonic()
                    self.server.system_db.run(self._prune)
            except Exception as exc:  # the database went away: try again on the next beat
                logger.warning(
                    "node registry: %s: %s",
                    type(exc).__name__,
                    str(exc).strip(),
                    exc_info=logger.isEnabledFor(logging.DEBUG),
                )
                next_beat = time.monotonic() + self.heartbeat

    @staticmethod
    def _in_transaction(fn: Any, *args: Any) -> Any:
        from django.db import connection, transaction

        with transaction.atomic(), connection.cursor() as cursor:
            return fn(cursor, *args)

    def _beat(self, housekeeping: bool = True) -> dict[str, int]:
        """Write this node's registry rows (what changed) and, with ``housekeeping`` (the
        heartbeat's, not an operator's ``ls``), expire others'; the counts written about."""
        conns, subs = [], []
        for i, conn in enumerate(list(self.server.connections)):
            entries = conn.registry_entries()
            if entries is not None:
                conns.append(entries[0])
                subs.extend(entries[1])
            if i % 500 == 499:
                gevent.sleep(0)  # many connections must not stall delivery

        def write(cursor: Any) -> None:
            self.writer.heartbeat(cursor, conns, subs)
            if not housekeeping:
                return
            gone = purge_stale_nodes(cursor)
            if gone:
                logger.info("removed node(s) that stopped sending heartbeats: %s", ", ".join(gone))
            control.expire_commands(cursor)

        self.server.system_db.run(self._in_transaction, write)
        return {"connections": len(conns), "subscriptions": len(subs)}

    def _prune(self) -> None:
        retention = changelog.configured_retention()
        if retention is None:
            return
        from django.db import connection

        with connection.cursor() as cursor:
            deleted = changelog.prune(cursor, datetime.datetime.now(datetime.UTC) - retention)
        if deleted:
            logger.info("changelog retention (%s): deleted %d change(s)", retention, deleted)

    # -- operator commands --------------------------------------------------------------

    def _run_commands(self) -> None:
        pending = self.server.system_db.run(self._in_transaction, control.pending_commands, self.id,
                                            self._since)
        for command_id, kind, args in pending:
            try:
                result = self._execute(kind, args)
            except Exception as exc:
                logger.exception("operator command %d (%s) failed", command_id, kind)
                result = {"error": f"{type(exc).__name__}: {exc}"}
            self.server.system_db.run(self._in_transaction, control.record_result, command_id, self.id,
                                      result)

    def _execute(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        if kind == "close":
            return self._close_connection(args["connection"])
        if kind == "replay":
            return self._replay(args["changes"], bool(args.get("dry_run")))
        if kind == WRITE_NOW:  # `ddpctl subs/conns ls`: the current state, not the last heartbeat's
            return self._beat(housekeeping=False)
        if kind == "stats":
            return node_stats(self.server)  # ddpctl top
        raise ValueError(f"unknown command {kind!r}")

    def _close_connection(self, connection_id: str) -> dict[str, Any]:
        for conn in list(self.server.connections):
            if conn.handle.id == connection_id:
                logger.info(
                    "closing connection %s (%s) at an operator's request",
                    connection_id,
                    conn.handle.client_address,
                )
                conn.close(1000, "Closed by operator")
                return {"closed": True, "remote_address": conn.handle.client_address}
        return {"closed": False}

    def _replay(self, changes: Iterable[list[Any]], dry_run: bool) -> dict[str, Any]:
        """Send each client again the documents of ``changes`` ([table, op, id]) it holds."""
        by_table = collections.by_table()
        docs: dict[tuple[str, str], None] = {}  # ordered, each document once
        skipped = 0
        for table, _op, row in changes:
            collection = by_table.get(table)
            if collection is None or row is None:
                skipped += 1  # a many-to-many table, a TRUNCATE or a table no longer published
                continue
            docs[(collection.name, row)] = None
        recipients: list[dict[str, Any]] = []
        reached: list[str] = []
        messages = 0
        for i, conn in enumerate(list(self.server.connections)):
            sent = conn.resend(docs, dry_run)
            if sent:
                reached.append(conn.handle.id)
                messages += len(sent)
                for collection_name, doc_id in sent:
                    if len(recipients) < _DRY_RUN_LISTED:
                        recipients.append(
                            {
                                "connection": conn.handle.id,
                                "remote_address": conn.handle.client_address,
                                "user_id": None if conn.user_id is None else str(conn.user_id),
                                "collection": collection_name,
                                "id": doc_id,
                            }
                        )
            if i % 200 == 199:
                gevent.sleep(0)
        if not dry_run and messages:
            logger.info("replay: sent %d message(s) to %d connection(s)", messages, len(reached))
        return {
            "documents": len(docs),
            "skipped": skipped,
            "messages": messages,
            "connections": reached,
            "recipients": recipients if dry_run else [],
        }
