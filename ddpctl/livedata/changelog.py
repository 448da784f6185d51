"""Reading ``ddpctl_change`` in commit order without ever skipping a committed row.

Change ids come from a sequence, taken when the statement runs, not when its
transaction commits.  A reader that kept only "the highest id seen" would skip the rows of
a slow transaction that commits after a faster one with higher ids.  So the reader keeps
**gaps**: ids below its position that were not visible yet.  Each read fetches new ids and
the gaps, in one statement, together with the statement's snapshot.  A gap is dropped only
when every transaction that could own it has ended (the snapshot's ``xmin`` passed the
``xmax`` recorded when the gap was first seen); if its row has not appeared by then, that
transaction rolled back.

Rows come out in the order they became visible, which is commit order between reads; within
one read they are sorted by id.  Either way, the changes of one row always come out in the
order they were made (a second writer of a row waits for the first to commit).
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["ChangeRow", "ChangelogReader", "OPS", "configured_retention", "count_range", "first_position_at",
           "prune", "read_range"]

_READ = """
WITH snap AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin,
                     pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax)
SELECT snap.xmin, snap.xmax, c.id, c."table", c.op, c."row", c.fields, c.at
FROM snap LEFT JOIN LATERAL (
    SELECT id, "table", op, "row", fields, at FROM ddpctl_change
    WHERE id > %(position)s OR id = ANY(%(gaps)s::bigint[])
    ORDER BY id LIMIT %(limit)s) c ON true
ORDER BY c.id
"""


OPS = {"I": "insert", "U": "update", "D": "delete", "T": "truncate"}


class ChangeRow(NamedTuple):
    id: int
    table: str
    op: str
    row: str | None
    fields: list[str] | None
    at: datetime.datetime


@dataclass
class ChangelogReader:
    """Where a reader is: every id ``<= position`` was read, except the ``gaps``."""

    position: int = 0
    gaps: dict[int, int] = field(default_factory=dict)  # id -> snapshot xmax when first missed
    batch_size: int = 5000

    def read(self, cursor: Any) -> list[ChangeRow]:
        """The next rows that became visible (at most ``batch_size``), in order."""
        cursor.execute(_READ, {"position": self.position, "gaps": list(self.gaps), "limit": self.batch_size})
        rows = cursor.fetchall()
        if not rows:
            return []
        xmin, xmax = rows[0][0], rows[0][1]
        changes = [ChangeRow(*r[2:]) for r in rows if r[2] is not None]
        expected = self.position + 1
        for change in changes:
            if change.id in self.gaps:
                del self.gaps[change.id]
            elif change.id >= expected:
                for missing in range(expected, change.id):
                    self.gaps[missing] = xmax
                expected = change.id + 1
        self.position = max(self.position, expected - 1)
        # A gap whose possible owners have all ended belongs to a rolled-back transaction.
        for gap, seen_xmax in list(self.gaps.items()):
            if seen_xmax <= xmin:
                del self.gaps[gap]
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
    def at_end(cls, cursor: Any, window: int = 10_000) -> ChangelogReader:
        """A reader positioned after the last visible change, with the gaps of the last
        ``window`` ids (transactions still in flight) remembered."""
        # The sequence, not max(id): after a prune the table may be empty.
        cursor.execute("SELECT coalesce(pg_sequence_last_value("
                       "pg_get_serial_sequence('ddpctl_change', 'id')::regclass), 0)")
        end = cursor.fetchone()[0]
        reader = cls(position=max(0, end - window))
        reader.catch_up_all(cursor)
        return reader


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
