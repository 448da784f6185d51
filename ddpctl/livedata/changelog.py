"""Reading ``ddpctl_change`` in commit order without ever skipping a committed row.

Change ids come from a sequence, drawn when the statement runs, not when its transaction
commits, so a reader that kept only "the highest id seen" would skip the rows of a slow
transaction that commits after a faster one with higher ids.  Each row also records the
top-level transaction that wrote it (``xid``, ``pg_current_xact_id()``), and the reader
tracks transactions instead of the ids it has not seen:

- ``position``: the highest id read; every row with a lower id was read, except rows of
- ``in_flight``: the transactions listed as running in the reader's last snapshot, and
- ``horizon``: that snapshot's ``xmax``; transactions from there on had not been listed.

Why that is enough (every read is one statement, with one snapshot ``S``): the capture
triggers run AFTER the data change, so the writing transaction already has its xid when
the row's id is drawn.  Take a row with id ``i <= position`` that ``S`` does not see.  The
row at ``position`` is visible in ``S``, so its id was drawn before ``S`` was taken; the
sequence is drawn in increasing order (``CACHE 1``, the identity column's default), so
``i`` was drawn, and its xid assigned, before ``S`` too.  Its transaction had begun and not
committed when ``S`` was taken: it is in ``pg_snapshot_xip(S)`` or (PostgreSQL lists only
xids below ``xmax``, one past the newest *completed* one) at or above ``pg_snapshot_xmax(S)``.
So each read asks for ``id > position``, plus the rows at or below the position of the
``in_flight`` transactions that have ended and of every transaction from the ``horizon``
on; then ``in_flight`` and ``horizon`` become the new snapshot's.  Parameters are one
xid per running transaction (at most ``max_connections + max_prepared_transactions``),
never one per row: an idle session in a transaction is one xid, and a 200,000-row import
that rolls back is forgotten as soon as it ends.  A listed transaction is only looked up
once it has ended (``pg_visible_in_snapshot``), so a big import in progress costs nothing;
one at or above the horizon is scanned until a newer transaction completes (under any
write load, at once).  A transaction of any age and length is covered: a reader started
with :meth:`ChangelogReader.at_end` takes the running transactions of its first snapshot.

Savepoints (``pg_current_xact_id()`` is the top-level xid; rows of a rolled-back
subtransaction never become visible), prepared transactions (listed as running until
``COMMIT PREPARED``), ``TRUNCATE`` (it has an xid before its AFTER trigger runs) and
many-to-many rows (the same triggers) need nothing more.  Rows written before migration
``0003_change_xid`` have no xid: they were all committed when it ran.

Rows come out in the order they became visible, which is commit order between reads;
within one read they are sorted by id.  Either way, the changes of one row always come out
in the order they were made (a second writer of a row waits for the first to commit).
The rows at or below the position of transactions that just ended come in one read,
however many (``batch_size`` bounds the rows above the position).
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["ChangeRow", "ChangelogReader", "OPS", "Snapshot", "configured_retention", "count_range",
           "first_position_at", "prune", "read_range"]

_SNAPSHOT = "WITH snap AS MATERIALIZED (SELECT pg_current_snapshot() AS s)"
_COLUMNS = 'c.id, c."table", c.op, c."row", c.fields, c.at'

# One statement, so one snapshot: its first row carries the snapshot (id NULL), then the
# changes, by id.  The last two arms only look at or below the position (above it, the
# first arm finds every row), so no row comes twice.
_READ = _SNAPSHOT + f"""
SELECT NULL::bigint AS id, {{export}}, NULL::text, NULL::text, NULL::text[], NULL::timestamptz, s::text
FROM snap
UNION ALL
(SELECT *, NULL FROM (SELECT {_COLUMNS} FROM ddpctl_change c
                      WHERE c.id > %(position)s ORDER BY c.id LIMIT %(limit)s) AS newer)
UNION ALL
(SELECT {_COLUMNS}, NULL FROM snap, unnest(%(in_flight)s::text[]::xid8[]) AS f(xid)
 JOIN ddpctl_change c ON c.xid = f.xid AND c.id <= %(position)s
 WHERE pg_visible_in_snapshot(f.xid, snap.s))
UNION ALL
(SELECT {_COLUMNS}, NULL FROM ddpctl_change c
 WHERE c.xid >= %(horizon)s::text::xid8 AND c.id <= %(position)s)
ORDER BY id NULLS FIRST
"""

# The statement's snapshot, exported for other sessions (pg_export_snapshot) in the same
# round trip, or not.
_READ, _READ_EXPORT = _READ.format(export="NULL::text"), _READ.format(export="pg_export_snapshot()")
_BEGIN_READ_ONLY = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "

_END = _SNAPSHOT + "SELECT s::text, (SELECT coalesce(max(id), 0) FROM ddpctl_change) FROM snap"
_NOW = _SNAPSHOT + "SELECT s::text FROM snap"


OPS = {"I": "insert", "U": "update", "D": "delete", "T": "truncate"}


class ChangeRow(NamedTuple):
    id: int
    table: str
    op: str
    row: str | None
    fields: list[str] | None
    at: datetime.datetime


class Snapshot(NamedTuple):
    """A PostgreSQL snapshot (``pg_snapshot``): transactions ``< xmin`` had ended, ``xip``
    were running, and from ``xmax`` (one past the newest completed one) on, none is listed."""

    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        """From ``pg_snapshot``'s text form ``xmin:xmax:xip,xip,...``."""
        xmin, xmax, xip = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))


@dataclass
class ChangelogReader:
    """Where a reader is: every change with id ``<= position`` was read, except those of
    the ``in_flight`` transactions and of transactions from ``horizon`` on (an xid; None:
    no such rows, for a reader that starts from a known position with nothing running)."""

    position: int = 0
    in_flight: frozenset[int] = field(default_factory=frozenset)
    horizon: int | None = None
    batch_size: int = 5000

    def read(self, cursor: Any) -> list[ChangeRow]:
        """The next rows that became visible, in order: at most ``batch_size`` above the
        position, and every row below it of the transactions that have ended since.

        ``cursor``: a psycopg2 cursor, not inside a REPEATABLE READ transaction (each read
        needs a fresh snapshot).  Database errors propagate; the reader is then unchanged.
        """
        return self._read(cursor, _READ)[1]

    def read_exported(self, cursor: Any) -> tuple[str, list[ChangeRow]]:
        """:meth:`read` in a new read-only REPEATABLE READ transaction that it begins, with
        the read's snapshot exported (``pg_export_snapshot()``), in one round trip:
        ``(snapshot id, rows)``.  The caller ends the transaction (the export with it).

        ``cursor``: a psycopg2 cursor of an autocommit connection, outside any transaction."""
        return self._read(cursor, _BEGIN_READ_ONLY + _READ_EXPORT)

    def _read(self, cursor: Any, statement: str) -> tuple[str, list[ChangeRow]]:
        cursor.execute(statement, {"position": self.position, "limit": self.batch_size,
                                   "in_flight": [str(x) for x in sorted(self.in_flight)],
                                   "horizon": None if self.horizon is None else str(self.horizon)})
        rows = cursor.fetchall()
        snapshot = Snapshot.parse(rows[0][6])
        changes = [ChangeRow(*r[:6]) for r in rows[1:]]
        self.position = max([self.position, *(c.id for c in changes[-1:])])
        self.in_flight, self.horizon = snapshot.xip, snapshot.xmax
        return rows[0][1], changes

    def catch_up_all(self, cursor: Any) -> list[ChangeRow]:
        """Read until nothing new is visible."""
        out: list[ChangeRow] = []
        while True:
            batch = self.read(cursor)
            out.extend(batch)
            if len(batch) < self.batch_size:
                return out

    @classmethod
    def at_end(cls, cursor: Any, position: int | None = None) -> ChangelogReader:
        """A reader after the last committed change (or after ``position``), that will
        still read every change of the transactions running now, however old or long."""
        if position is None:
            cursor.execute(_END)
            text, position = cursor.fetchone()
        else:
            cursor.execute(_NOW)
            text = cursor.fetchone()[0]
        snapshot = Snapshot.parse(text)
        return cls(position=position, in_flight=snapshot.xip, horizon=snapshot.xmax)


def first_position_at(cursor: Any, moment: datetime.datetime) -> int:
    """The position of the first change made at or after ``moment`` (or the next one to come)."""
    cursor.execute("SELECT min(id) FROM ddpctl_change WHERE at >= %s", (moment,))
    found = cursor.fetchone()[0]
    if found is not None:
        return found
    cursor.execute("SELECT coalesce(pg_sequence_last_value("
                   "pg_get_serial_sequence('ddpctl_change', 'id')::regclass), 0) + 1")
    return cursor.fetchone()[0]


_RANGE = """id >= %s AND (%s::bigint IS NULL OR id <= %s)
             AND (%s::text[] IS NULL OR "table" = ANY(%s::text[]))"""


def read_range(cursor: Any, first: int, last: int | None, tables: list[str] | None = None,
               limit: int = 5000) -> list[ChangeRow]:
    """Past changes with ``first <= id <= last`` (of ``tables``, if given), by id, at most ``limit``."""
    cursor.execute(f"""SELECT id, "table", op, "row", fields, at FROM ddpctl_change WHERE {_RANGE}
                       ORDER BY id LIMIT %s""", (first, last, last, tables, tables, limit))
    return [ChangeRow(*r) for r in cursor.fetchall()]


def count_range(cursor: Any, first: int, last: int | None, tables: list[str] | None = None) -> int:
    """How many changes :func:`read_range` would go through."""
    cursor.execute(f"SELECT count(*) FROM ddpctl_change WHERE {_RANGE}", (first, last, last, tables, tables))
    return cursor.fetchone()[0]


def prune(cursor: Any, before: datetime.datetime, batch: int = 10_000) -> int:
    """Delete changes made before ``before``, ``batch`` rows per statement; how many.

    Each statement is short, so writers and readers are never held up for long.
    """
    total = 0
    while True:
        cursor.execute("""DELETE FROM ddpctl_change WHERE id IN (
                              SELECT id FROM ddpctl_change WHERE at < %s ORDER BY id LIMIT %s)""",
                       (before, batch))
        total += cursor.rowcount
        if cursor.rowcount < batch:
            return total


DEFAULT_RETENTION = datetime.timedelta(days=7)


def configured_retention() -> datetime.timedelta | None:
    """``settings.DDPCTL_CHANGELOG_RETENTION``: a timedelta, seconds, a duration such as
    ``"7d"``, or None to keep every change; 7 days by default.  ``ValueError`` if invalid."""
    from django.conf import settings

    from ..timespec import parse_duration

    value = getattr(settings, "DDPCTL_CHANGELOG_RETENTION", DEFAULT_RETENTION)
    if value is None:
        return None
    what = "DDPCTL_CHANGELOG_RETENTION must be a timedelta, seconds, a duration such as '7d' or None"
    retention = None
    if isinstance(value, datetime.timedelta):
        retention = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            retention = datetime.timedelta(seconds=value)
        except (OverflowError, ValueError):
            raise ValueError(f"{what}, not {value!r}") from None
    elif isinstance(value, str):
        try:
            retention = parse_duration(value)
        except (OverflowError, ValueError) as exc:
            raise ValueError(f"{what}, not {value!r} ({exc})") from None
    if retention is None:
        raise ValueError(f"{what}, not {value!r}")
    if retention < datetime.timedelta(0):
        raise ValueError(f"DDPCTL_CHANGELOG_RETENTION must not be negative, not {value!r}")
    return retention
