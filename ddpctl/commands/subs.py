"""``ddpctl subs ls``."""

from __future__ import annotations

import json

import click

from .django_setup import django_options, setup_django
from .output import Column, age, emit_table, json_option
from .registry_rows import SOURCE_COLUMN, fresh_rows, timeout_option


@click.group()
def subs() -> None:
    """Live subscriptions on every node."""


@subs.command("ls")
@django_options
@click.option("--publication", "-p", metavar="NAME", help="Only subscriptions to this publication.")
@click.option("--user", metavar="USER_ID", help="Only subscriptions of this user id ('' for anonymous).")
@click.option("--node", metavar="NODE", help="Only this node (its id, host, or host:pid).")
@click.option(
    "--collection", "-c", metavar="NAME", help="Only subscriptions holding documents of this collection."
)
@timeout_option
@json_option
def subs_ls(
    settings: str | None,
    pythonpath: tuple[str, ...],
    publication: str | None,
    user: str | None,
    node: str | None,
    collection: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """List who is subscribed to what, across all nodes.

    Each row: node, connection, remote address, user, publication, params, documents
    the subscription holds (per collection with --json), how its observer refreshes on a
    change, and age.  "multiplexed": with every observer of the same query shape, one query
    per batch of changes for all of them; "alone: <why>": one query of its own per batch
    (a composite primary key, a Collection overriding serialize(), ...).

    The list is current: every live node is asked to write its subscriptions now and
    answers within milliseconds (SOURCE "live").  A node that does not answer within
    --timeout (hung, or killed moments ago) is listed from the rows of its last registry
    heartbeat (--node-heartbeat, 5 s by default): SOURCE "registry 4s old", and a warning
    on stderr.  A node that missed three heartbeats is not listed at all.

    \b
    Examples:
      ddpctl subs ls --settings mysite.settings
      ddpctl subs ls --publication BooksByAuthor --user 42
      ddpctl subs ls --json | jq 'group_by(.publication) | map({(.[0].publication): length})'
    """
    setup_django(settings, pythonpath)
    from ..redaction import redact_params_json
    from ..registry import list_subscriptions

    rows = fresh_rows(node, timeout, lambda cursor: list_subscriptions(
        cursor, node=node, user=user, publication=publication, collection=collection), as_json)
    for row in rows:  # (nodes redact them before storing; a node of an older version did not)
        row["params"] = redact_params_json("publication", row["publication"], row["params"])
    if as_json:
        for row in rows:
            row["params"] = json.loads(row["params"])
    columns = [
        Column("node_name", "node"),
        Column("connection", "connection", style="cyan"),
        Column("remote_address", "remote"),
        Column("user_id", "user"),
        Column("publication", "publication", style="bold"),
        Column("params", "params"),
        Column("documents", "docs", justify="right"),
        Column("refresh", "refresh"),
        Column("started_at", "age", age, justify="right"),
        SOURCE_COLUMN,
    ]
    emit_table(columns, rows, as_json, empty="no live subscriptions")
