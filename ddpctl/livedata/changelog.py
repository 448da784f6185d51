"""Reading ``ddpctl_change`` in commit order without ever skipping a committed row.

Change ids come from a sequence, drawn when the statement runs, not when its transaction
commits, so a reader that kept only "the highest id seen" would skip the rows of a slow
transaction that commits after a faster one with higher ids.  Each row also records the
top-level transaction that wrote it (``xid``, ``pg_current_xact_id()``), and that is
what the reader tracks instead of the ids it has not seen:

- ``position``: the highest id read; every row with a lower id was read, except rows of
- ``in_flight``: transactions that were still running at the reader's last snapshot.

Why that is enough (every read is one statement, with one snapshot ``S``): the capture
triggers run AFTER the data change, so the writing transaction already has its xid when
the row's id is drawn.  Take a row with id ``i <= position`` that ``S`` does not see.  The
row at ``position`` is visible in ``S``: its id was drawn before ``S`` was taken.  The
sequence is drawn in increasing order (``CACHE 1``, the identity column's default), so
``i`` was drawn, and the invisible row's xid assigned, before ``S`` too: its transaction
had begun and not committed when ``S`` was taken, which is exactly the list
``pg_snapshot_xip(S)``.  A rolled-back transaction's rows are never visible; once it has
ended it is dropped.  So each read asks for ``id > position OR xid IN in_flight`` and
afterwards keeps, as ``in_flight``, the snapshot's running transactions: the cost of a
read is bounded by the number of concurrent transactions (at most ``max_connections`` +
``max_prepared_transactions``), never by rows.  An idle session in a transaction is one
xid; a 200,000-row import that rolls back costs one probe of its xid when it ends.  A
running transaction is never probed (``pg_visible_in_snapshot``), so a big import in
progress costs nothing either.  The same holds for a transaction of any age or length: a
reader started with :meth:`ChangelogReader.at_end` takes the running transactions of its
first snapshot.

Savepoints (``pg_current_xact_id()`` is the top-level xid; rows of a rolled-back
subtransaction never become visible), prepared transactions (they stay in the snapshot's
list until ``COMMIT PREPARED``), ``TRUNCATE`` (it has an xid before its AFTER trigger
runs) and many-to-many rows (the same triggers) need nothing more.  Rows written before
migration ``0003_change_xid`` have no xid: they were all committed when it ran.

Rows come out in the order they became visible, which is commit order between reads;
within one read they are sorted by id.  Either way, the changes of one row always come out
in the order they were made (a second writer of a row waits for the first to commit).
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["ChangeRow", "ChangelogReader", "OPS", "Snapshot", "configured_retention", "count_range",
           "first_position_at", "prune", "read_range"]

_SNAPSHOT = "WITH snap AS MATERIALIZED (SELECT pg_current_snapshot() AS s)"

# One statement, so one snapshot: its first row carries the snapshot (id NULL), then the
# changes.  ``in_flight`` rows are only looked for below the position (above it, the first
# arm finds them) and only for transactions that have ended by this snapshot.
_READ = _SNAPSHOT + """
SELECT NULL::bigint AS id, NULL::text, NULL::text, NULL::text, NULL::text[], NULL::timestamptz, s::text
FROM snap
UNION ALL
(SELECT id, "table", op, "row", fields, at, NULL FROM (
    (SELECT id, "table", op, "row", fields, at FROM ddpctl_change
     WHERE id > %(position)s ORDER BY id LIMIT %(limit)s)
    UNION ALL
    (SELECT c.id, c."table", c.op, c."row", c.fields, c.at
     FROM snap, unnest(%(xids)s::text[]::xid8[], %(floors)s::bigint[]) AS f(xid, floor)
     CROSS JOIN LATERAL (
         SELECT id, "table", op, "row", fields, at FROM ddpctl_change
         WHERE xid = f.xid AND id > f.floor AND id <= %(position)s ORDER BY id LIMIT %(limit)s) c
     WHERE pg_visible_in_snapshot(f.xid, snap.s))
 ) AS changes ORDER BY id LIMIT %(limit)s)
ORDER BY id NULLS FIRST
"""

_END = _SNAPSHOT + "SELECT s::text, (SELECT coalesce(max(id), 0) FROM ddpctl_change) FROM snap"


OPS = {"I": "insert", "U": "update", "D": "delete", "T": "truncate"}


class ChangeRow(NamedTuple):
    id: int
    table: str
    op: str
    row: str | None
    fields: list[str] | None
    at: datetime.datetime


class Snapshot(NamedTuple):
    """A PostgreSQL snapshot (``pg_snapshot``): transactions ``< xmin`` have ended,
    ``>= xmax`` had not begun, ``xip`` were running."""

    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        """From ``pg_snapshot``'s text form ``xmin:xmax:xip,xip,...``."""
        xmin, xmax, xip = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))

    def running(self, xid: int) -> bool:
        return xid >= self.xmax or xid in self.xip


@dataclass
class ChangelogReader:
    """Where a reader is: every change with id ``<= position`` was read, except those of the
    ``in_flight`` transactions (xid -> the highest of its ids already read, 0 if none)."""

    position: int = 0
    in_flight: dict[int, int] = field(default_factory=dict)
    batch_size: int = 5000

    def read(self, cursor: Any) -> list[ChangeRow]:
        """The next rows that became visible (at most ``batch_size``), in order.

        ``cursor``: a psycopg2 cursor, not inside a REPEATABLE READ transaction (each read
        needs a fresh snapshot).  Database errors propagate; the reader is then unchanged.
        """
        xids = list(self.in_flight)
        cursor.execute(_READ, {"position": self.position, "limit": self.batch_size,
                               "xids": [str(x) for x in xids], "floors": [self.in_flight[x] for x in xids]})
        rows = cursor.fetchall()
        snapshot = Snapshot.parse(rows[0][6])
        changes = [ChangeRow(*r[:6]) for r in rows[1:]]
        last = changes[-1].id if changes else self.position
        # A full batch is the lowest ``batch_size`` matching ids: an ended transaction may
        # still have rows between ``last`` and the old position.
        unread_below = len(changes) >= self.batch_size and last < self.position
        in_flight = {xid: 0 for xid in snapshot.xip}
        for xid, floor in self.in_flight.items():
            if snapshot.running(xid):
                in_flight[xid] = floor
            elif unread_below:
                in_flight[xid] = max(floor, last)
        self.in_flight = in_flight
        self.position = max(self.position, last)
        return changes

    def catch_up_all(self, cursor: Any) -> list[ChangeRow]:
        """Read until nothing new is visible."""
        out: list[ChangeRow] = []
        while True:
            batch = self.read(cursor)
            out.extend(batch)
            if len(batch) < self.batch_size:
                return out

    @classmethod
    def at_end(cls, cursor: Any) -> ChangelogReader:
        """A reader after the last committed change, that will still read every change of
        the transactions running now, however old or long they are."""
        cursor.execute(_END)
        text, end = cursor.fetchone()
        return cls(position=end, in_flight=dict.fromkeys(Snapshot.parse(text).xip, 0))


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
    if value is None or isinstance(value, datetime.timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.timedelta(seconds=value)
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(f"DDPCTL_CHANGELOG_RETENTION must be a timedelta, seconds, a duration such as "
                     f"'7d' or None, not {value!r}")
