"""``ddpctl tail``."""

from __future__ import annotations

import json
import logging
import select
import sys
import time
from typing import Any

import click

from ..log import configure_logging
from .django_setup import database_errors, django_options, raw_connection, setup_django
from .output import json_default

logger = logging.getLogger(__name__)
OP_NAMES = ("insert", "update", "delete", "truncate")


def point_option(name: str, help: str) -> Any:
    return click.option(name, metavar="POS|TIME", help=help)


collection_option = click.option(
    "--collection", "-c", "collection_names", multiple=True, metavar="NAME",
    help="Only changes of this collection (or table); repeatable.")


def resolve_point(cursor: Any, text: str | None, option: str) -> int | None:
    """A ``--since``/``--until`` value as a changelog position (``UsageError`` if invalid)."""
    if text is None:
        return None
    from django.utils import timezone

    from ..livedata.changelog import first_position_at
    from ..timespec import parse_point

    try:
        point = parse_point(text, tz=timezone.get_current_timezone())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
    if point.position is not None:
        return point.position
    return first_position_at(cursor, point.time)


def table_filter(names: tuple[str, ...]) -> list[str] | None:
    """``--collection`` values (collection names or table names) as table names."""
    if not names:
        return None
    from ..livedata.collection import collections

    tables = []
    for name in names:
        collection = collections.by_name(name)
        tables.append(collection.table if collection is not None else name)
    return tables


def change_record(change: Any, names: dict[str, str]) -> dict[str, Any]:
    """One change as ``tail --json`` writes it (and ``replay FILE`` reads it)."""
    from ..livedata.changelog import OPS

    return {
        "position": change.id,
        "time": change.at,
        "op": OPS.get(change.op, change.op),
        "table": change.table,
        "collection": names.get(change.table),
        "id": change.row,
        "fields": change.fields,
    }


@click.command()
@django_options
@collection_option
@click.option(
    "--op", "ops", multiple=True, type=click.Choice(OP_NAMES), help="Only this operation; repeatable."
)
@point_option(
    "--since",
    "Start from history: a position (changes from it on), a time "
    "(2026-11-21T09:30, naive times in Django's TIME_ZONE) or a duration ago (10m, 2h).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per line (what `ddpctl replay FILE` reads)."
)
def tail(
    settings: str | None,
    pythonpath: tuple[str, ...],
    collection_names: tuple[str, ...],
    ops: tuple[str, ...],
    since: str | None,
    as_json: bool,
) -> None:
    """Follow changes as they are committed, like the dispatcher of every node sees them.

    Each line: position in the changelog, time of the change, operation, collection (or
    table), document id and, for updates, the changed columns.  Changes come out in commit
    order, each once, even across a lost database connection (it reconnects and goes on
    from its position).  Ctrl-C or SIGTERM stops it.

    \b
    Examples:
      ddpctl tail --settings mysite.settings
      ddpctl tail -c books --op update
      ddpctl tail --since 1h --json > changes.jsonl    # then: ddpctl replay changes.jsonl
    """
    configure_logging("warning")
    setup_django(settings, pythonpath)
    from ..livedata.capture import CHANNEL
    from ..livedata.changelog import ChangelogReader
    from ..livedata.collection import collections

    names = {c.table: c.name for c in collections.all()}
    tables = table_filter(collection_names)
    wanted_ops = {op[0].upper() for op in ops} or None
    out = _JsonLines() if as_json else _Lines()

    import psycopg2

    reader: ChangelogReader | None = None
    conn = None
    delay = 0.2
    try:
        with database_errors():
            while True:
                try:
                    if conn is None:
                        conn = raw_connection("ddpctl-tail")
                        with conn.cursor() as cursor:
                            cursor.execute(f"LISTEN {CHANNEL}")
                            if reader is None:
                                reader = _start(cursor, since)
                            else:
                                logger.warning("reconnected; going on from position %d", reader.position)
                        delay = 0.2
                    with conn.cursor() as cursor:
                        while True:
                            batch = reader.read(cursor)
                            for change in batch:
                                if (tables is None or change.table in tables) and (
                                    wanted_ops is None or change.op in wanted_ops
                                ):
                                    out.write(change_record(change, names))
                            if len(batch) < reader.batch_size:
                                break
                    out.flush()
                    if select.select([conn], [], [], 1.0)[0]:
                        conn.poll()
                        conn.notifies.clear()
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    if reader is None:
                        raise  # never connected: a configuration problem, not a blip
                    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    logger.warning("database connection lost (%s); reconnecting in %.1f s", text, delay)
                    if conn is not None:
                        conn.close()
                    conn = None
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
    except KeyboardInterrupt:
        out.flush()
    except BrokenPipeError:
        sys.stderr.close()  # the reader of the pipe went away (| head): not an error
    finally:
        if conn is not None:
            conn.close()


def _start(cursor: Any, since: str | None) -> Any:
    from ..livedata.changelog import ChangelogReader

    if since is None:
        return ChangelogReader.at_end(cursor)
    first = resolve_point(cursor, since, "--since")
    cursor.execute("SELECT min(id) FROM ddpctl_change")
    oldest = cursor.fetchone()[0]
    if oldest is not None and first < oldest and first > 0:
        logger.warning("changes before position %d were pruned (changelog retention); starting there", oldest)
    return ChangelogReader.at_end(cursor, position=max(0, first - 1))


class _Lines:
    """Readable lines; coloured on a terminal."""

    COLOURS = {"insert": "green", "update": "yellow", "delete": "red", "truncate": "magenta"}

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()

    def write(self, record: dict[str, Any]) -> None:
        what = record["collection"] or record["table"]
        fields = f" [{', '.join(record['fields'])}]" if record["fields"] else ""
        moment = record["time"].astimezone().isoformat(timespec="milliseconds")
        line = f"{record['position']}\t{moment}\t{record['op']}\t{what}\t{record['id'] or '*'}{fields}"
        if self.tty:
            click.secho(line, fg=self.COLOURS.get(record["op"]))
        else:
            click.echo(line)

    def flush(self) -> None:
        sys.stdout.flush()


class _JsonLines:
    def write(self, record: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(record, default=json_default) + "\n")

    def flush(self) -> None:
        sys.stdout.flush()
