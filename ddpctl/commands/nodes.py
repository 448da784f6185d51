"""``ddpctl nodes ls``."""
from __future__ import annotations

import click

from .django_setup import database_errors, django_options, setup_django
from .output import Column, age, emit_table, json_option


@click.group()
def nodes() -> None:
    """The serving processes (nodes) that share this database."""


@nodes.command("ls")
@django_options
@click.option("--all", "include_stale", is_flag=True,
              help="Also list nodes whose heartbeat is overdue (crashed or paused), until a live "
                   "node removes them.")
@json_option
def nodes_ls(settings: str | None, pythonpath: tuple[str, ...], include_stale: bool, as_json: bool) -> None:
    """List the live `ddpctl serve` processes, on every host.

    A node updates its row every --node-heartbeat seconds; one that misses three beats
    (it crashed, or lost the database) is not listed.

    \b
    Examples:
      ddpctl nodes ls --settings mysite.settings
      ddpctl nodes ls --json | jq '.[].pid'
    """
    setup_django(settings, pythonpath)
    from django.db import connection

    from ..registry import list_nodes

    with database_errors(), connection.cursor() as cursor:
        rows = list_nodes(cursor, include_stale)
    columns = [
        Column("id", "node", style="cyan"), Column("host", "host"), Column("pid", "pid", justify="right"),
        Column("addresses", "addresses", lambda v: " ".join(v or [])), Column("version", "version"),
        Column("started_at", "up", age, justify="right"),
        Column("heartbeat_at", "heartbeat", lambda v: age(v) + " ago", justify="right"),
        Column("connections", "conns", justify="right"), Column("subscriptions", "subs", justify="right"),
    ]
    if include_stale:
        columns.append(Column("live", "live", lambda v: "yes" if v else "NO (overdue)"))
    emit_table(columns, rows, as_json, empty="no live nodes (is `ddpctl serve` running on this database?)")
