"""``ddpctl conns ls`` and ``ddpctl conns close``."""

from __future__ import annotations

import click

from .django_setup import database_errors, django_options, raw_connection, setup_django
from .output import Column, age, emit_table, json_option
from .registry_rows import SOURCE_COLUMN, fresh_rows, timeout_option
from .seconds import Seconds

CONNECTION_COLUMNS = [
    Column("id", "connection", style="cyan"),
    Column("node_name", "node"),
    Column("remote_address", "remote"),
    Column("user_id", "user"),
    Column("transport", "transport"),
    Column("subscriptions", "subs", justify="right"),
    Column("opened_at", "age", age, justify="right"),
    SOURCE_COLUMN,
]


@click.group()
def conns() -> None:
    """Live DDP connections on every node."""


@conns.command("ls")
@django_options
@click.option("--node", metavar="NODE", help="Only this node (its id, host, or host:pid).")
@click.option(
    "--user", metavar="USER_ID", help="Only connections logged in as this user id ('' for anonymous)."
)
@timeout_option
@json_option
def conns_ls(
    settings: str | None, pythonpath: tuple[str, ...], node: str | None, user: str | None, timeout: float,
    as_json: bool
) -> None:
    """List live DDP connections across all nodes.

    The list is current: every live node is asked to write its connections now (SOURCE
    "live").  A node that does not answer within --timeout is listed from the rows of its
    last registry heartbeat (--node-heartbeat, 5 s by default): SOURCE "registry 4s old",
    and a warning on stderr.

    \b
    Examples:
      ddpctl conns ls --settings mysite.settings
      ddpctl conns ls --user 42 --json
    """
    setup_django(settings, pythonpath)
    from ..registry import list_connections

    rows = fresh_rows(node, timeout, lambda cursor: list_connections(cursor, node=node, user=user), as_json)
    emit_table(CONNECTION_COLUMNS, rows, as_json, empty="no live connections")


@conns.command("close")
@django_options
@click.argument("connection_id", metavar="ID")
@click.option(
    "--timeout",
    type=Seconds(min=0.1),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the node to confirm.",
)
def conns_close(
    settings: str | None, pythonpath: tuple[str, ...], connection_id: str, timeout: float
) -> None:
    """Disconnect the DDP connection ID (from `ddpctl conns ls`; a unique prefix will do).

    The node closes it with code 1000 after the messages already queued for it; the
    client is free to reconnect (Meteor clients do, at once).  Exits 1 if no live
    connection matches or the node does not confirm in time.

    \b
    Example:
      ddpctl conns close Hb2Hq5XoBCTdYBR8c --settings mysite.settings
    """
    setup_django(settings, pythonpath)
    from .. import control
    from ..registry import list_connections

    with database_errors():
        conn = raw_connection("ddpctl-conns-close")
        try:
            with conn.cursor() as cursor:
                matches = list_connections(cursor, id_prefix=connection_id)
                exact = [m for m in matches if m["id"] == connection_id]
                if exact:
                    matches = exact
                if not matches:
                    raise click.ClickException(f"no live connection {connection_id!r} (see: ddpctl conns ls)")
                if len(matches) > 1:
                    raise click.ClickException(
                        f"{connection_id!r} matches {len(matches)} connections: "
                        + ", ".join(m["id"] for m in matches)
                    )
                match = matches[0]
                conn_id, node, node_name, remote = (match["id"], match["node"], match["node_name"],
                                                    match["remote_address"])
                result = control.close_connections(cursor, [(conn_id, node)], timeout)[conn_id]
        finally:
            conn.close()
    if result is None:
        raise click.ClickException(f"node {node_name} did not confirm within {timeout:g} s")
    if "error" in result:
        raise click.ClickException(f"node {node_name}: {result['error']}")
    if not result.get("closed"):
        raise click.ClickException(f"connection {conn_id} had already gone from node {node_name}")
    click.echo(f"closed connection {conn_id} ({remote or 'unknown address'}) on node {node_name}")
