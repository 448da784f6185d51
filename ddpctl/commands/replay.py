"""``ddpctl replay``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import click

from ..log import configure_logging
from .django_setup import database_errors, django_options, raw_connection, setup_django
from .output import Column, emit_table, json_default, stderr_console
from .seconds import Seconds
from .tail import OP_NAMES, collection_option, point_option, resolve_point, table_filter

CHUNK = 500  # changes per command to the nodes


def read_changes_file(stream: Any, name: str) -> list[tuple[str, str, str | None]]:
    """``(table, op, id)`` from the JSON lines of ``tail --json``; ``ClickException`` naming the
    first bad line (nothing is sent unless the whole file is valid)."""
    changes = []
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            table, op, doc_id = record["table"], record["op"], record["id"]
            if (
                not isinstance(table, str)
                or op not in OP_NAMES
                or not (doc_id is None or isinstance(doc_id, str))
            ):
                raise ValueError("needs a table (string), an op (insert/update/delete/truncate) and an id")
        except (ValueError, KeyError, TypeError) as exc:
            detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise click.ClickException(
                f"{name}, line {number}: not a `ddpctl tail --json` record ({detail})"
            ) from None
        changes.append((table, op, doc_id))
    return changes


@click.command()
@django_options
@click.argument("file", required=False, type=click.File("r"), metavar="[FILE]")
@point_option(
    "--since", "First change to send: a position, a time (2026-11-21T09:30) or a duration ago (10m)."
)
@point_option("--until", "Last change to send (a position, inclusive) or the time before which to stop.")
@collection_option
@click.option(
    "--dry-run", is_flag=True, help="Send nothing; list what would be sent, and to which connections."
)
@click.option(
    "--timeout",
    type=Seconds(min=0.1),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for every node to answer each batch.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def replay(
    settings: str | None,
    pythonpath: tuple[str, ...],
    file: Any,
    since: str | None,
    until: str | None,
    collection_names: tuple[str, ...],
    dry_run: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Send past changes again to the connected clients that may see them.

    Takes changelog entries (--since/--until) or the JSON lines `ddpctl tail --json`
    wrote (FILE, or - for stdin).  Every live node sends each of its clients that holds
    a changed document a `changed` message with all of the document's current fields, as
    that client may see them: a client that missed or mangled an update gets the truth
    again, and a client that may not see a document gets nothing.  A document named by
    several entries is sent once per batch of 500.

    \b
    Examples:
      ddpctl replay --since 10m --dry-run          # who would get what
      ddpctl replay --since 1200 --until 1300 -c books
      ddpctl replay changes.jsonl                  # from: ddpctl tail --json > changes.jsonl
    """
    configure_logging("warning")
    if file is not None and (since or until):
        raise click.UsageError("give either FILE or --since/--until, not both")
    if file is None and since is None:
        raise click.UsageError("give FILE (from `ddpctl tail --json`) or --since")
    setup_django(settings, pythonpath)
    from .. import control
    from ..livedata.changelog import count_range
    from ..registry import list_nodes

    tables = table_filter(collection_names)
    file_changes = read_changes_file(file, file.name) if file is not None else None
    totals: dict[str, Any] = {"changes": 0, "documents": 0, "skipped": 0, "messages": 0}
    reached: set[str] = set()
    recipients: list[dict[str, Any]] = []
    silent: set[str] = set()
    with database_errors():
        conn = raw_connection("ddpctl-replay")
        try:
            with conn.cursor() as cursor:
                nodes = {row["id"]: f"{row['host']}:{row['pid']}" for row in list_nodes(cursor)}
                if not nodes:
                    raise click.ClickException("no live nodes: no client is connected to send changes to")
                if file_changes is not None:
                    chosen = [c for c in file_changes if tables is None or c[0] in tables]
                    chunks: Iterator[list[tuple[str, str, str | None]]] = iter(
                        [chosen[i : i + CHUNK] for i in range(0, len(chosen), CHUNK)]
                    )
                    total = len(chosen)
                else:
                    first = resolve_point(cursor, since, "--since") or 0
                    last = resolve_point(cursor, until, "--until")
                    if last is not None and until is not None and not until.strip().isdigit():
                        last -= 1  # --until TIME: changes made before it
                    total = count_range(cursor, first, last, tables)
                    chunks = _changelog_chunks(conn, first, last, tables)
                with _progress(total, dry_run and not as_json) as advance:
                    for chunk in chunks:
                        args = {"changes": [list(c) for c in chunk], "dry_run": dry_run}
                        command = control.send_command(cursor, "replay", args)
                        results = control.wait_for_results(cursor, command, set(nodes), timeout)
                        silent |= set(nodes) - set(results)
                        totals["changes"] += len(chunk)
                        for node, result in results.items():
                            if "error" in result:
                                raise click.ClickException(f"node {nodes.get(node, node)}: {result['error']}")
                            totals["messages"] += result["messages"]
                            reached.update(result["connections"])
                            recipients.extend(
                                dict(r, node=nodes.get(node, node)) for r in result["recipients"]
                            )
                        first_result = next(iter(results.values()), {})
                        totals["documents"] += first_result.get("documents", 0)
                        totals["skipped"] += first_result.get("skipped", 0)
                        advance(len(chunk))
        finally:
            conn.close()
    totals["connections"] = len(reached)
    totals["nodes"] = len(nodes)
    totals["dry_run"] = dry_run
    _report(totals, recipients, dry_run, as_json, [nodes[n] for n in silent])
    if silent:
        sys.exit(1)


def _changelog_chunks(
    conn: Any, first: int, last: int | None, tables: list[str] | None
) -> Iterator[list[tuple[str, str, str | None]]]:
    from ..livedata.changelog import OPS, read_range

    while True:
        with conn.cursor() as cursor:
            rows = read_range(cursor, first, last, tables, limit=CHUNK)
        if not rows:
            return
        yield [(r.table, OPS.get(r.op, r.op), r.row) for r in rows]
        first = rows[-1].id + 1


class _progress:
    """A progress bar on a terminal for long replays; nothing otherwise."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total = total
        self.bar: Any = None
        if not quiet and total > CHUNK and sys.stderr.isatty():
            from rich.progress import Progress

            self.bar = Progress(console=stderr_console(), transient=True)

    def __enter__(self) -> Any:
        if self.bar is None:
            return lambda n: None
        self.bar.start()
        task = self.bar.add_task("replaying", total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()


def _report(
    totals: dict[str, Any], recipients: list[dict[str, Any]], dry_run: bool, as_json: bool, silent: list[str]
) -> None:
    if as_json:
        click.echo(
            json.dumps(
                {**totals, "recipients": recipients, "unanswered_nodes": silent},
                default=json_default,
                indent=2,
            )
        )
    else:
        if dry_run and recipients:
            emit_table(
                [
                    Column("node", "node"),
                    Column("connection", "connection", style="cyan"),
                    Column("remote_address", "remote"),
                    Column("user_id", "user"),
                    Column("collection", "collection"),
                    Column("id", "id"),
                ],
                recipients,
                False,
            )
        verb = "would send" if dry_run else "sent"
        click.echo(
            f"{'dry run: ' if dry_run else ''}{totals['changes']} change(s), {totals['documents']} "
            f"document(s): {verb} {totals['messages']} message(s) to {totals['connections']} "
            f"connection(s) on {totals['nodes']} node(s)"
            + (
                f"; {totals['skipped']} change(s) of tables without a collection skipped"
                if totals["skipped"]
                else ""
            )
        )
    for name in silent:
        click.echo(f"warning: node {name} did not answer within the timeout", err=True)
