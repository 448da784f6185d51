"""The server's cost, measured from outside it: PostgreSQL's statistics and /proc CPU time.

    counter = StatementCounter(conn, dbid, userid)     # or ActivityCounter(conn) without
    meter = Meter(counter)                             #    pg_stat_statements
    before = meter.read(); ...; after = meter.read()
    per_change, delta = meter.counts(before, after, active_seconds, changes, writer_changes=changes)
    clock = CpuClock(pid); ...; clock.percent()        # % of one core since CpuClock()

Counters read ``{key: (count, label)}``; ``totals()`` turns a ``diff()`` of two reads into
the named columns (``columns``).  Every statement the benchmark itself sends starts with
``MARK``, so a counter can leave them out when the server and the benchmark share a role.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["MARK", "StatementCounter", "ActivityCounter", "Meter", "cpu_seconds", "run_seconds", "CpuClock"]

MARK = "/* ddpbench */ "  # on every statement of the writer and the benchmark
STATS_FLUSH_WAIT = 11.0  # PostgreSQL 15 backends hold idle statistics up to 10 s (PGSTAT_IDLE_INTERVAL)


class StatementCounter:
    """Calls recorded by ``pg_stat_statements`` for one database, of one role (``userid``)
    or, when the server and the writer share a role, of every statement not marked with
    ``MARK``.  Read at once: the extension counts as statements finish."""

    columns = ["stmts", "SELECT"]
    flush_wait = 0.0

    def __init__(self, conn, dbid: int, userid: int | None) -> None:
        self.conn, self.dbid, self.userid = conn, dbid, userid

    def read(self) -> dict[str, tuple[int, str]]:
        """{queryid: (calls, statement text)} of the server's statements."""
        where = "userid = %s" if self.userid is not None else "query NOT LIKE %s"
        arg = self.userid if self.userid is not None else "%" + MARK.strip() + "%"
        with self.conn.cursor() as cur:
            cur.execute(f"{MARK}SELECT queryid::text, calls, query FROM pg_stat_statements "
                        f"WHERE dbid = %s AND {where}", [self.dbid, arg])
            return {qid: (calls, query) for qid, calls, query in cur.fetchall()}

    @staticmethod
    def totals(delta: dict[str, tuple[int, str]]) -> dict[str, float]:
        selects = sum(calls for calls, query in delta.values()
                      if query.lstrip().lower().startswith(("select", "with")))
        return {"stmts": sum(calls for calls, _ in delta.values()), "SELECT": selects}

    @staticmethod
    def diff(before: dict, after: dict) -> dict[str, tuple[int, str]]:
        out = {}
        for qid, (calls, query) in after.items():
            n = calls - before.get(qid, (0, ""))[0]
            if n:
                out[qid] = (n, query)
        return out

    def writer_share(self, changes: int) -> dict[str, float]:
        return {"stmts": 0, "SELECT": 0}


class ActivityCounter:
    """Fallback without ``pg_stat_statements``: the database's transactions
    (``xact_commit + xact_rollback``) and table scans (``seq_scan + idx_scan`` over
    ``pg_stat_user_tables``).  Backends report these when idle, up to ``flush_wait``
    seconds late, so reads wait that long after activity."""

    columns = ["xacts", "scans"]
    flush_wait = STATS_FLUSH_WAIT

    def __init__(self, conn) -> None:
        self.conn = conn

    def read(self) -> dict[str, tuple[int, str]]:
        with self.conn.cursor() as cur:
            cur.execute(f"{MARK}SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database "
                        "WHERE datname = current_database()), "
                        "(SELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0) FROM pg_stat_user_tables)")
            xacts, scans = cur.fetchone()
        return {"xacts": (int(xacts), "transactions"), "scans": (int(scans), "table scans")}

    @staticmethod
    def totals(delta: dict[str, tuple[int, str]]) -> dict[str, float]:
        return {"xacts": delta.get("xacts", (0, ""))[0], "scans": delta.get("scans", (0, ""))[0]}

    @staticmethod
    def diff(before: dict, after: dict) -> dict[str, tuple[int, str]]:
        # the "before" read is one transaction of this database, counted in "after"
        return {k: (after[k][0] - before[k][0] - (1 if k == "xacts" else 0), after[k][1]) for k in after}

    def writer_share(self, changes: int) -> dict[str, float]:
        return {"xacts": changes, "scans": changes}  # one autocommit UPDATE by primary key each


class Meter:
    """Counter reads with the background activity of the server (measured idle) taken out
    of the time between reads that was not measured (waiting for statistics)."""

    def __init__(self, counter: StatementCounter | ActivityCounter) -> None:
        self.counter = counter
        self.idle: dict[str, float] = {}  # per second
        self._dirty = True

    def touched(self) -> None:
        """Something other than the idle server used the database since the last read."""
        self._dirty = True

    def read(self) -> tuple[float, dict]:
        """(time.monotonic(), counter values), waiting for statistics to settle if needed."""
        if self._dirty and self.counter.flush_wait:
            time.sleep(self.counter.flush_wait)
        self._dirty = False
        return time.monotonic(), self.counter.read()

    def measure_idle(self, seconds: float) -> dict[str, float]:
        t0, before = self.read()
        time.sleep(max(seconds, self.counter.flush_wait))
        t1, after = self.read()
        totals = self.counter.totals(self.counter.diff(before, after))
        self.idle = {k: v / (t1 - t0) for k, v in totals.items()}
        return self.idle

    def counts(self, before: tuple[float, dict], after: tuple[float, dict], active: float,
               units: int, writer_changes: int = 0) -> tuple[dict[str, float], dict]:
        """Per-unit counts between two reads, less the writer's share and the idle
        background of the time between the reads that was not ``active``."""
        delta = self.counter.diff(before[1], after[1])
        totals = self.counter.totals(delta)
        unmeasured = max(0.0, after[0] - before[0] - active)
        share = self.counter.writer_share(writer_changes)
        return ({k: (v - share[k] - self.idle.get(k, 0.0) * unmeasured) / max(1, units)
                 for k, v in totals.items()}, delta)


def cpu_seconds(pid: int) -> float:
    """utime + stime (+ those of exited, reaped children) of ``pid`` and its live
    descendants, in seconds; 0.0 if ``pid`` is gone."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
        stats[int(entry.name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += stats[p][1]
            todo.extend(child for child, (ppid, _) in stats.items() if ppid == p)
    return total / tick


def run_seconds(pid: int) -> float:
    """Time ``pid``'s live threads have spent on a CPU, in seconds, to the nanosecond
    (``/proc/<pid>/task/*/schedstat``: :func:`cpu_seconds` counts clock ticks, 10 ms each,
    too coarse for a cell that costs 50 ms); its children are not counted.  Falls back to
    :func:`cpu_seconds` where schedstat is missing."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except FileNotFoundError:
            continue  # the thread ended meanwhile (or no schedstat: caught below)
        except (OSError, ValueError, IndexError):
            return cpu_seconds(pid)
    if not total and not (Path(f"/proc/{pid}/schedstat")).exists():
        return cpu_seconds(pid)
    return total / 1e9


class CpuClock:
    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.start = (time.monotonic(), cpu_seconds(pid)) if pid else None

    def percent(self) -> float | None:
        if not self.pid:
            return None
        wall, cpu = self.start
        return 100.0 * (cpu_seconds(self.pid) - cpu) / max(1e-6, time.monotonic() - wall)
