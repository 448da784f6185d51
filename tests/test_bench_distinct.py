"""The "distinct subscriptions" benchmark's own arithmetic (bench/distinct.py, bench/servercost.py):
what it calls delivered, missing, coalesced and extra, and how it subtracts what is not the
server's.  The benchmark's figures are only as good as these."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import distinct
from servercost import ActivityCounter, Meter, StatementCounter, cpu_seconds

BOOKS, AUTHORS = distinct.BOOKS, distinct.AUTHORS


def store() -> distinct.Bookstore:
    """Client 0: author 10, books 100 and 101; client 1: author 11, books 110 and 111."""
    author_ids, book_ids = [10, 11], [[100, 101], [110, 111]]
    owner = {(AUTHORS, "10"): 0, (AUTHORS, "11"): 1, (BOOKS, "100"): 0, (BOOKS, "101"): 0,
             (BOOKS, "110"): 1, (BOOKS, "111"): 1}
    return distinct.Bookstore(author_ids, book_ids, {}, owner)


def changed(client, book, title, received):
    return [client, "changed", BOOKS, str(book), {"title": title}, received]


def test_renames_delivered_to_the_owner_only_once():
    cell = distinct.Cell(2, "rename", 20)
    renames = [(100, "1000.0"), (110, "1000.5")]
    events = [changed(0, 100, "1000.0", 1000.25), changed(1, 110, "1000.5", 1001.0)]
    distinct.check_renames(store(), renames, events, cell)
    assert (cell.missing, cell.extra, cell.coalesced) == (0, 0, 0)
    assert sorted(cell.latencies) == [0.25, 0.5]


def test_renames_wrong_client_and_duplicates_are_extra_and_do_not_count_as_delivered():
    cell = distinct.Cell(2, "rename", 20)
    renames = [(100, "1000.0"), (110, "1000.5")]
    events = [changed(1, 100, "1000.0", 1000.1),   # client 1 does not hold book 100
              changed(1, 110, "1000.5", 1000.6),
              changed(1, 110, "1000.5", 1000.7),   # twice
              [1, "removed", BOOKS, "110", None, 1000.8]]  # nothing removed it
    distinct.check_renames(store(), renames, events, cell)
    assert cell.extra == 3
    assert cell.missing == 1  # book 100 never reached client 0
    assert cell.missed == ["book 100 -> 1000.0 at client 0"]
    assert cell.latencies == [pytest.approx(0.1)]


def test_a_rename_superseded_by_a_later_one_that_arrived_is_coalesced_not_missing():
    cell = distinct.Cell(2, "rename", 20)
    renames = [(100, "1000.0"), (100, "1000.1"), (101, "1000.2"), (101, "1000.3")]
    events = [changed(0, 100, "1000.1", 1000.2),   # 1000.0 merged into it
              changed(0, 101, "1000.2", 1000.4)]   # 1000.3 never came
    distinct.check_renames(store(), renames, events, cell)
    assert (cell.coalesced, cell.missing, cell.extra) == (1, 1, 0)


def test_an_email_move_must_remove_the_author_and_every_book_at_its_client():
    cell = distinct.Cell(2, "email", 20)
    moves = [(0, 2000.0), (1, 2000.1)]
    events = [[0, "removed", AUTHORS, "10", None, 2000.3],
              [0, "removed", BOOKS, "100", None, 2000.3],
              [0, "removed", BOOKS, "101", None, 2000.3],
              [1, "removed", AUTHORS, "11", None, 2000.2],
              [1, "removed", BOOKS, "110", None, 2000.2],   # 111 never removed
              [0, "removed", BOOKS, "110", None, 2000.2],   # not client 0's
              [0, "changed", AUTHORS, "10", {"name": "x"}, 2000.4]]
    distinct.check_moves(store(), moves, events, cell, closed={1})
    assert cell.missing == 1
    assert cell.missing_closed == 1
    assert cell.missed == ["client 1 kept book 111"]
    assert cell.extra == 2
    assert sorted(cell.latencies) == [pytest.approx(0.1), pytest.approx(0.3)]


def test_statement_totals_count_selects_and_diff_only_new_calls():
    before = {"1": (5, "SELECT 1"), "2": (3, "BEGIN")}
    after = {"1": (9, "SELECT 1"), "2": (3, "BEGIN"), "3": (2, "WITH x AS (SELECT 1) SELECT * FROM x"),
             "4": (1, "COMMIT")}
    delta = StatementCounter.diff(before, after)
    assert StatementCounter.totals(delta) == {"stmts": 7, "SELECT": 6}


class FakeCounter(ActivityCounter):
    flush_wait = 0.0

    def __init__(self, reads):
        self.reads = iter(reads)

    def read(self):
        return next(self.reads)


def test_fallback_counts_leave_out_the_writer_the_benchmark_read_and_idle_background():
    def reading(xacts, scans):
        return {"xacts": (xacts, ""), "scans": (scans, "")}

    meter = Meter(FakeCounter([reading(100, 50), reading(121, 60)]))
    meter.idle = {"xacts": 2.0, "scans": 1.0}  # per second
    before, after = (0.0, meter.read()[1]), (10.0, meter.read()[1])
    # 10 s between the reads, 6 of them measured; 5 changes by the writer
    per_change, _ = meter.counts(before, after, active=6.0, units=5, writer_changes=5)
    # xacts: 21 - 1 (the "before" read) - 5 (writer) - 2/s * 4 s = 7; scans: 10 - 5 - 1/s * 4 s = 1
    assert per_change == {"xacts": pytest.approx(7 / 5), "scans": pytest.approx(1 / 5)}


def test_cpu_seconds_of_a_process_include_its_descendants():
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "while time.process_time() < 0.3: pass\n"
         "print('busy', flush=True); sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "busy\n"
        child_cpu = cpu_seconds(child.pid)
        assert child_cpu >= 0.3 - 0.02  # utime and stime are whole ticks (10 ms), each rounded down
        assert cpu_seconds(os.getpid()) >= child_cpu + time.process_time() - 0.05  # /proc counts ticks
        assert cpu_seconds(child.pid + 10_000_000) == 0.0  # no such process
    finally:
        child.stdin.close()
        child.wait(10)
