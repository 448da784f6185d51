"""Fresh registry rows for ``subs ls`` and ``conns ls``: every live node is asked to write
its current connections and subscriptions before they are read
(:func:`ddpctl.registry.request_fresh_rows`), and each row says whether it is that fresh
(``live``) or from its node's last heartbeat (``registry``, with its age)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from .output import Column, age
from .seconds import Seconds

__all__ = ["SOURCE_COLUMN", "fresh_rows", "timeout_option"]

DEFAULT_TIMEOUT = 2.0

timeout_option = click.option(
    "--timeout",
    type=Seconds(),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for every live node to write its current state; a node that does not "
    "answer in time is listed from its last heartbeat's rows (source 'registry' and their age). "
    "0: ask no node, list the rows of the last heartbeats.",
)


SOURCE_COLUMN = Column("source", "source")


def fresh_rows(
    node: str | None, timeout: float, read: Callable[[Any], list[dict[str, Any]]], as_json: bool
) -> list[dict[str, Any]]:
    """``read(cursor)``'s rows after asking the nodes (those ``node`` matches) for their
    current state, each with ``as_of`` (when its node wrote it) and ``source``: ``live``
    (written on request just now) or ``registry`` (from its node's last heartbeat); for a
    table (not ``as_json``) the latter reads ``registry 4s old``.  Warns on stderr about
    each node that did not answer within ``timeout`` seconds.  Database errors are one-line
    CLI errors."""
    from django.db import connection

    from ..registry import request_fresh_rows
    from .django_setup import database_errors

    with database_errors(), connection.cursor() as cursor:
        answered, silent = request_fresh_rows(cursor, node, timeout)
        rows = read(cursor)
    if timeout > 0:
        for info in silent:
            click.echo(
                f"warning: node {info['host']}:{info['pid']} ({info['id']}) did not answer within "
                f"{timeout:g} s; its rows are from its last heartbeat, {age(info['heartbeat_at'])} ago",
                err=True,
            )
    for row in rows:  # live: written on request just now; else as of the node's last heartbeat
        live = row["node"] in answered
        row["source"] = "live" if live else "registry" if as_json else f"registry {age(row['as_of'])} old"
    return rows
