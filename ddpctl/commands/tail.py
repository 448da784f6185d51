"""``ddpctl tail``."""

from __future__ import annotations

import json
import logging
import select
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from ..log import configure_logging
from .django_setup import database_errors, django_options, raw_connection, setup_django
from .output import json_default

if TYPE_CHECKING:
    from ..livedata.change_documents import ChangeDocument
    from ..livedata.changelog import ChangeRow

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
    from django.db import connection

    from ..livedata.collection import collections

    tables = []
    existing: set[str] | None = None
    for name in names:
        collection = collections.by_name(name)
        if collection is None:
            if existing is None:
                with database_errors():
                    existing = set(connection.introspection.table_names())
            if name not in existing:  # a typo would otherwise show nothing, silently
                click.echo(f"Warning: no Collection and no table is named {name!r}: it matches no change "
                           f"(collections: {', '.join(sorted(c.name for c in collections.all())) or '-'})",
                           err=True)
        tables.append(collection.table if collection is not None else name)
    return tables


def change_record(change: ChangeRow, names: dict[str, str], view: ChangeDocument | None = None,
                  ddp: bool = False) -> dict[str, Any]:
    """One change as ``tail --json`` writes it (and ``replay FILE`` reads it).

    ``view``: the change as clients see it (a :class:`ddpctl.livedata.change_documents.ChangeDocument`),
    if read: then ``fields`` names the document fields the update touched (excluded ones
    left out), ``document`` (inserts and updates) is the document's current fields in EJSON
    wire form (null: the row was gone when read) and, with ``ddp``, ``ddp`` the message an
    observer sends (null: none); ``error`` says why values could not be read."""
    from ..ddp.ejson import to_json_value
    from ..livedata.changelog import OPS

    record = {
        "position": change.id,
        "time": change.at,
        "op": OPS.get(change.op, change.op),
        "table": change.table,
        "collection": names.get(change.table),
        "id": change.row,
        "fields": change.fields,
    }
    if view is None:
        return record
    if view.collection is None:  # a table no Collection publishes: no values, nothing sent
        if ddp:
            record["ddp"] = None
        return record
    record["fields"] = view.fields
    if view.error is not None:
        record["error"] = view.error
    elif change.op in "IU" and (view.document is not None or view.gone):
        record["document"] = to_json_value(view.document)
    if ddp:
        record["ddp"] = None if view.message is None else to_json_value(view.message)
    return record


@click.command()
@django_options
@collection_option
@click.option(
    "--op", "ops", multiple=True, type=click.Choice(OP_NAMES), help="Only this operation; repeatable."
)
@point_option(
    "--since",
    "Start from history: a position (changes from it on), a time "
    "(2026-11-21T09:30, naive times in Django's TIME_ZONE) or a duration ago (10m, 2h). "
    "Values are read now: a past change shows its document as it is today.",
)
@click.option(
    "--ddp", "as_ddp", is_flag=True,
    help="Show the DDP message an observer sends for each change (added / changed / removed), "
         "as the clients receive it.")
@click.option(
    "--no-values", "no_values", is_flag=True,
    help="Do not read the changed rows: only what the changelog records (ids, changed fields).")
@click.option(
    "--json", "as_json", is_flag=True,
    help="One JSON object per line (what `ddpctl replay FILE` reads): position, time, op, table, "
         "collection, id, fields (the document fields an update changed), document (an insert's or "
         "update's current fields in EJSON; null: gone when read), ddp (with --ddp; null: nothing sent).")
def tail(
    settings: str | None,
    pythonpath: tuple[str, ...],
    collection_names: tuple[str, ...],
    ops: tuple[str, ...],
    since: str | None,
    as_ddp: bool,
    no_values: bool,
    as_json: bool,
) -> None:
    """Follow changes as they are committed, like the dispatcher of every node sees them,
    with the values the clients receive.

    Each line: position in the changelog, time of the change, operation, collection (or
    table), document id and the document's fields as its Collection sends them to clients
    (excluded fields never appear; values as EJSON): every field for an insert, the fields
    it changed for an update, the id only for a delete.  With --ddp, the DDP message an
    observer sends instead: added, changed (with those fields) or removed.

    Values are what is current when the row is read, just after the change is committed
    (the NOTIFY), not a record of the change: a row changed again meanwhile shows its newer
    values (as an observer sends them), one deleted since shows "(gone when read)", and
    --since shows past changes with today's values.  The changelog keeps which rows and
    columns changed, never values.

    Changes come out in commit order, each once, even across a lost database connection
    (it reconnects and goes on from its position).  Ctrl-C or SIGTERM stops it.

    \b
    Examples:
      ddpctl tail --settings mysite.settings
      ddpctl tail -c books --op update --ddp
      ddpctl tail --json | jq -c 'select(.op == "update") | {id, document}'
      ddpctl tail --since 1h --json > changes.jsonl    # then: ddpctl replay changes.jsonl
    """
    if as_ddp and no_values:
        raise click.UsageError("--ddp shows values: it cannot go with --no-values")
    configure_logging("warning")
    setup_django(settings, pythonpath)
    from django import db

    from ..livedata.capture import CHANNEL
    from ..livedata.change_documents import describe_changes
    from ..livedata.changelog import ChangelogReader
    from ..livedata.collection import collections

    by_table = collections.by_table()
    names = {table: c.name for table, c in by_table.items()}
    # Values are read on Django's connection; named, like the LISTEN one, in pg_stat_activity.
    db.connections["default"].settings_dict.setdefault("OPTIONS", {}).setdefault(
        "application_name", "ddpctl-tail-values")
    tables = table_filter(collection_names)
    wanted_ops = {op[0].upper() for op in ops} or None
    out = _JsonLines() if as_json else _Lines(as_ddp)

    import psycopg2

    lost_connection = (psycopg2.OperationalError, psycopg2.InterfaceError, db.OperationalError,
                       db.InterfaceError)
    reader: ChangelogReader | None = None
    conn = None
    delay = 0.2
    pending: list[ChangeRow] | None = None  # read from the changelog, not shown yet
    more = True  # the last read may have left rows to read
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
                            if pending is None:
                                batch = reader.read(cursor)
                                more = len(batch) >= reader.batch_size
                                pending = [change for change in batch
                                           if (tables is None or change.table in tables)
                                           and (wanted_ops is None or change.op in wanted_ops)]
                            # The rows are read after the changes committed (a lost connection
                            # here keeps the batch: it is shown after the reconnect).
                            views = describe_changes(pending, by_table, read_values=not no_values)
                            for change, view in zip(pending, views, strict=True):
                                out.write(change_record(change, names, view, as_ddp), view)
                            pending = None
                            if not more:
                                break
                    out.flush()
                    if select.select([conn], [], [], 1.0)[0]:
                        conn.poll()
                        conn.notifies.clear()
                except lost_connection as exc:
                    if reader is None:
                        raise  # never connected: a configuration problem, not a blip
                    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    logger.warning("database connection lost (%s); reconnecting in %.1f s", text, delay)
                    if conn is not None:
                        conn.close()
                    conn = None
                    db.connection.close()  # the connection values are read on: a new one next time
                    more = True
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

    def __init__(self, ddp: bool = False) -> None:
        self.tty = sys.stdout.isatty()
        self.ddp = ddp

    def write(self, record: dict[str, Any], view: Any = None) -> None:
        what = record["collection"] or record["table"]
        moment = record["time"].astimezone().isoformat(timespec="milliseconds")
        line = f"{record['position']}\t{moment}\t{record['op']}\t{what}\t{record['id'] or '*'}"
        detail = self.detail(record, view)
        if detail:
            line += "\t" + detail
        if self.tty:
            click.secho(line, fg=self.COLOURS.get(record["op"]))
        else:
            click.echo(line)

    def detail(self, record: dict[str, Any], view: Any) -> str:
        """What follows the id: the values (or the DDP message), else the changed fields."""
        from ..ddp.messages import stringify

        op, fields = record["op"], record["fields"]
        names = f"[{', '.join(fields)}]" if fields else ""
        if view is None or view.collection is None:
            return names
        if view.error is not None:
            return f"{names} (values not read: {view.error})".lstrip()
        if self.ddp:
            if view.message is not None:
                return stringify(view.message)
            if view.gone:
                return "(gone when read: nothing sent)"
            if op == "update" and not fields:
                return "(no published field changed: nothing sent)"
            if op == "truncate":
                return "(every document of the collection removed)"
            return names
        if view.gone:
            return f"{names} (gone when read)".lstrip()
        if view.document is None:
            return names
        if op == "update":
            if not fields:
                return "(no published field changed)"
            shown = {name: view.document[name] for name in fields if name in view.document}
        else:
            shown = view.document
        return _ejson_text(shown)

    def flush(self) -> None:
        sys.stdout.flush()


def _ejson_text(fields: dict[str, Any]) -> str:
    from ..ddp.ejson import to_json_value

    return json.dumps(to_json_value(fields), ensure_ascii=False, separators=(", ", ": "))


class _JsonLines:
    def write(self, record: dict[str, Any], view: Any = None) -> None:
        sys.stdout.write(json.dumps(record, default=json_default) + "\n")

    def flush(self) -> None:
        sys.stdout.flush()
