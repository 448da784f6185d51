"""Benchmark scenario "distinct subscriptions" (issue 11): what one write costs the server
when every client has a subscription of its own.

N clients (separate DDP connections of ``bench/loadgen.py``) each subscribe to the
bookstore's ``BooksByAuthorEmail`` with their own author's email (``author-<i>@bench.example``;
each author has ``BOOKS_PER_AUTHOR`` books), so no two subscriptions can share an
observer.  A writer (plain psycopg2, one row per statement, autocommit) then changes one
row at a time at a fixed rate:

* ``rename``: a book's title (a random permutation of the N clients' books, repeated), the
  title being the writer's time just before the statement (``repr(time.time())``);
* ``email``: an author's email (to ``moved-<i>@bench.example``, each author at most once
  per cell; the books are in the other table: the joined-table change), after which that
  author's client must get ``removed`` for the author and its books.  Moved emails are put
  back outside any measurement: before a cell that needs those authors again (waiting until
  the clients have the documents back) and before the next N's clients subscribe.

For each (N, change, rate) it reports, measured only from outside the server:

* database statements per change, from PostgreSQL's own statistics: ``pg_stat_statements``
  (calls of the server's role; the writer and the benchmark use other roles) when a private
  cluster (``bench/pgcluster.py``) or the shared server has it, else, labelled as such, the
  database's transactions (``pg_stat_database``: commits + rollbacks) and table scans
  (``pg_stat_user_tables``: sequential + index), the writer's own (one of each per change)
  subtracted;
* completeness: each change must reach exactly the client holding the row.  ``missing``:
  changes the right client did not get (a later value of the same book, "coalesced", counts
  as delivered: DDP sends states, not every intermediate value); ``extra``: messages a client
  got about documents that are not its own, or twice;
* commit-to-client latency p50 / p99 of the right client's messages;
* CPU (utime + stime from ``/proc/<pid>/stat``, with exited children) of the server process
  and, with a private cluster, of PostgreSQL, in % of one core over the measured interval
  (writer start to the last expected message).

plus, per N, the time until all N subscriptions are ready when the clients, all connected
first (``HANDSHAKE_SLOTS`` handshakes at a time), subscribe at once.  A cell that does not
drain within the cap ends the rows of that N ("skipped" rows say so); client connections
the server closes are reported with its close reason, their changes counted missing, and
what the server logs (``--log-level warning``) goes into the notes.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pgcluster import ClusterUnavailable, PrivateCluster
from servercost import MARK, ActivityCounter, CpuClock, Meter, StatementCounter

__all__ = ["Settings", "Cell", "Ready", "Result", "Bookstore", "run", "format_result", "check_renames",
           "check_moves"]

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
PUBLICATION = "BooksByAuthorEmail"
HANDSHAKE_SLOTS = 500  # clients between TCP connect and DDP connected at a time (the accept queue is 2,048)
EMAIL = "author-{i}@bench.example"
MOVED = "moved-{i}@bench.example"
BOOKS_PER_AUTHOR = 2
BOOKS, AUTHORS = "bookstore.book", "bookstore.author"
SERVER_ROLE, WRITER_ROLE, DATABASE = "ddpbench_server", "ddpbench_writer", "ddpbench_distinct"


@dataclass
class Settings:
    """Sizes of one run: ``sizes`` (clients), ``rates`` (changes/s), ``seconds`` of writing
    per cell, ``drain_cap`` (seconds to wait for delivery after writing) and
    ``ready_timeout`` (seconds for all subscriptions to be ready)."""
    sizes: Sequence[int]
    rates: Sequence[int] = (20, 100)
    seconds: float = 4.0
    drain_cap: float = 60.0
    ready_timeout: float = 300.0
    grace: float = 1.0  # after the last expected message, for ones that should not come
    idle_seconds: float = 3.0  # measuring the idle server's background statements

    @classmethod
    def for_run(cls, quick: bool) -> Settings:
        if quick:
            return cls(sizes=(50, 300), seconds=1.5, drain_cap=20.0, ready_timeout=60.0, grace=0.5,
                       idle_seconds=1.0)
        return cls(sizes=(100, 1000, 5000))


@dataclass
class Cell:
    """One (clients, change, rate) measurement; counts are per change where named so."""
    clients: int
    change: str  # "rename" or "email"
    rate: int
    changes: int = 0
    seconds: float = 0.0  # writing
    drain: float = 0.0  # from the last write to the last expected message
    counts: dict[str, float] = field(default_factory=dict)  # per change, by counter column
    missing: int = 0
    extra: int = 0
    coalesced: int = 0
    missing_closed: int = 0  # of ``missing``, at clients whose connection had ended
    missed: list[str] = field(default_factory=list)  # the first few missing changes, described
    latencies: list[float] = field(default_factory=list)
    server_cpu: float = 0.0  # % of one core
    database_cpu: float | None = None
    top: list[tuple[float, str]] = field(default_factory=list)  # (calls per change, statement)
    note: str = ""

    def add_note(self, text: str) -> None:
        self.note = f"{self.note}; {text}" if self.note else text


@dataclass
class Ready:
    clients: int
    seconds: float | None  # from all sending ``sub`` at once; None: not all ready within the timeout
    connect_seconds: float = 0.0  # connecting them all before
    not_ready: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # why clients were not ready
    spread: dict[str, float] = field(default_factory=dict)  # {"p50": s, ...} of the clients' ready times
    server_log: str = ""
    counts: dict[str, float] = field(default_factory=dict)  # per subscription
    server_cpu: float = 0.0
    idle: dict[str, float] = field(default_factory=dict)  # per second, with no writes


@dataclass
class Result:
    source: str  # what the counts are, for the heading
    columns: list[str]
    ready: list[Ready] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)


# --- the database -----------------------------------------------------------------------

@dataclass
class Database:
    server_url: str  # what ``ddpctl serve`` and ``migrate`` use
    writer_url: str
    admin_url: str  # reads the statistics (in the benchmark's database)
    source: str
    pid: int | None  # the postmaster, with a private cluster
    statements: bool  # pg_stat_statements usable
    userid: int | None = None  # the server's role, when it is not the writer's


def _with_user(url: str, user: str, dbname: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc}", path=f"/{dbname}"))


@contextmanager
def database(shared_url: Callable[[], str], private: bool) -> Iterator[Database]:
    """A database for the scenario: in a private cluster with ``pg_stat_statements`` (the
    server, the writer and the benchmark as three roles) when ``private`` and the system
    binaries allow, else the one ``shared_url()`` creates (pg_stat_statements if that server
    preloads it, else the fallback counters).  The private cluster is gone on exit."""
    import psycopg2

    cluster = PrivateCluster.find() if private else None
    if cluster is not None:
        try:
            cluster.start()
        except ClusterUnavailable as error:
            logger.warning("no private PostgreSQL cluster, using the shared server: %s", error)
            cluster = None
    try:
        if cluster is not None:
            admin = psycopg2.connect(cluster.url)
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute(f"{MARK}CREATE ROLE {SERVER_ROLE} LOGIN")
                cur.execute(f"{MARK}CREATE ROLE {WRITER_ROLE} LOGIN IN ROLE {SERVER_ROLE}")  # inherits its rights
                cur.execute(f"{MARK}CREATE DATABASE {DATABASE} OWNER {SERVER_ROLE}")
                cur.execute(f"{MARK}SELECT oid FROM pg_roles WHERE rolname = %s", [SERVER_ROLE])
                userid = cur.fetchone()[0]
            admin.close()
            admin = psycopg2.connect(_with_user(cluster.url, "postgres", DATABASE))
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute(f"{MARK}CREATE EXTENSION pg_stat_statements")
            admin.close()
            yield Database(
                server_url=_with_user(cluster.url, SERVER_ROLE, DATABASE),
                writer_url=_with_user(cluster.url, WRITER_ROLE, DATABASE),
                admin_url=_with_user(cluster.url, "postgres", DATABASE),
                source=(f"pg_stat_statements of the server's role (private PostgreSQL {cluster.version} "
                        "cluster; the writer and the benchmark are other roles)"),
                pid=cluster.pid, statements=True, userid=userid)
            return
        url = shared_url()
        probe = psycopg2.connect(url)
        probe.autocommit = True
        statements = True
        with probe.cursor() as cur:
            try:
                cur.execute(f"{MARK}CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                cur.execute(f"{MARK}SELECT count(*) FROM pg_stat_statements")
            except psycopg2.Error as error:  # not installed, or not in shared_preload_libraries
                logger.info("no pg_stat_statements: %s", str(error).strip())
                statements = False
        probe.close()
        source = ("pg_stat_statements of the database, every statement not marked as the writer's or "
                  "the benchmark's" if statements else
                  "no pg_stat_statements: xacts = transactions (pg_stat_database), scans = table scans "
                  "(pg_stat_user_tables), the writer's subtracted; NOT statements")
        yield Database(server_url=url, writer_url=url, admin_url=url, source=source, pid=None,
                       statements=statements)
    finally:
        if cluster is not None:
            cluster.stop()


def _counter(db: Database, conn):
    if not db.statements:
        return ActivityCounter(conn)
    with conn.cursor() as cur:
        cur.execute(f"{MARK}SELECT oid FROM pg_database WHERE datname = current_database()")
        dbid = cur.fetchone()[0]
    return StatementCounter(conn, dbid, db.userid)


class ServerLog:
    """What the server logged (at ``--log-level warning``: only what matters) since the last look."""

    def __init__(self, server) -> None:
        self.server = server
        self.seen = len(server.output())

    def news(self) -> str:
        """'' or "<lines> line(s), first: <line>"."""
        text = self.server.output()
        lines = [line for line in text[self.seen:].splitlines() if line.strip()]
        self.seen = len(text)
        return f"{len(lines)} line(s), first: {lines[0][:200]}" if lines else ""


@dataclass
class Pids:
    server: int  # ddpctl serve
    database: int | None  # the private cluster's postmaster


@dataclass
class Bookstore:
    """The scenario's rows: client i's author and books."""
    author_ids: list[int]  # by client number
    book_ids: list[list[int]]  # by client number
    titles: dict[int, str]  # book id -> current title
    owner: dict[tuple[str, str], int]  # (collection, document id) -> client number
    moved: set[int] = field(default_factory=set)  # clients whose author has a MOVED email now


def populate(conn, authors: int) -> Bookstore:
    """``authors`` authors (``EMAIL`` of 0 .. authors - 1) with ``BOOKS_PER_AUTHOR`` books each."""
    with conn.cursor() as cur:
        cur.execute(f"{MARK}INSERT INTO bookstore_author (name, email) "
                    "SELECT 'Author ' || g, replace(%s, '{i}', g::text) FROM generate_series(0, %s) g",
                    [EMAIL, authors - 1])
        cur.execute(f"{MARK}INSERT INTO bookstore_book (title, author_id, pages, blurb) "
                    "SELECT 'book ' || a.id || '.' || k, a.id, 0, '' FROM bookstore_author a, "
                    "generate_series(1, %s) k ORDER BY a.id, k", [BOOKS_PER_AUTHOR])
        cur.execute(f"{MARK}SELECT id, email FROM bookstore_author")
        number = {}
        author_ids = [0] * authors
        for author_id, email in cur.fetchall():
            i = int(email.split("@")[0].rsplit("-", 1)[1])
            author_ids[i], number[author_id] = author_id, i
        cur.execute(f"{MARK}SELECT id, author_id, title FROM bookstore_book ORDER BY id")
        book_ids: list[list[int]] = [[] for _ in range(authors)]
        titles = {}
        for book_id, author_id, title in cur.fetchall():
            book_ids[number[author_id]].append(book_id)
            titles[book_id] = title
    owner = {(AUTHORS, str(a)): i for i, a in enumerate(author_ids)}
    owner.update({(BOOKS, str(b)): i for i, books in enumerate(book_ids) for b in books})
    return Bookstore(author_ids, book_ids, titles, owner)


# --- the clients ------------------------------------------------------------------------

class Clients:
    """``bench/loadgen.py`` with N clients subscribed each to its own email, recording events."""

    def __init__(self, port: int, count: int, ready_timeout: float) -> None:
        """Start the clients and connect them all (not subscribed yet)."""
        args = [sys.executable, str(ROOT / "bench" / "loadgen.py"), "127.0.0.1", str(port), str(count),
                PUBLICATION, "--params", json.dumps([EMAIL]), "--events", "--ready-timeout", str(ready_timeout),
                "--connect-first", str(HANDSHAKE_SLOTS)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        words = self._line().split(" ", 3)
        self.connect_seconds, self.not_connected = float(words[1]), int(words[2])
        self.reasons: dict[str, int] = json.loads(words[3])
        self.ready_seconds, self.not_ready = 0.0, 0
        self.spread: dict[str, float] = {}  # quantiles of the clients' ready times
        self.closed: set[int] = set()  # clients whose connection ended (as of the last collect)
        self.errors: dict[str, int] = {}  # why, and how many
        self.subscribed = False

    def subscribe(self) -> None:
        """All subscribe at once; sets ``ready_seconds`` (and ``not_ready``, ``reasons``)."""
        self.proc.stdin.write("SUBSCRIBE\n")
        self.proc.stdin.flush()
        self.subscribed = True
        line = self._line()
        words = line.split(" ", 3 if line.startswith("NOTREADY") else 2)
        self.ready_seconds = float(words[1])
        if words[0] == "NOTREADY":
            self.not_ready, self.reasons = int(words[2]), json.loads(words[3])
        else:
            self.spread = json.loads(words[2])

    def _line(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator exited with {self.proc.wait()}")
        return line

    def collect(self, expect: list[list], cap: float, grace: float, at_reached: Callable[[], None]
                ) -> tuple[float, int, list[list]]:
        """(seconds until every expectation held or ``cap``, expectations unmet, events);
        ``at_reached`` runs as soon as the load generator says so (before the grace).
        ``closed`` and ``errors`` then say how many client connections have ended, and why."""
        self.proc.stdin.write("COLLECT " + json.dumps({"expect": expect, "cap": cap, "grace": grace}) + "\n")
        self.proc.stdin.flush()
        words = self._line().split()
        at_reached()
        result = json.loads(self._line())
        self.closed, self.errors = set(result["closed"]), result["errors"]
        if result.get("truncated"):
            logger.warning("the load generator kept only the first %d events", len(result["events"]))
        return float(words[1]), int(words[2]), result["events"]

    def close(self) -> None:
        """Stop the load generator (and every client connection)."""
        if not self.subscribed:  # it waits for SUBSCRIBE, and would take STOP for it
            self.proc.kill()
            self.proc.wait()
            return
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write("STOP\n")
                self.proc.stdin.flush()
                self.proc.stdout.readline()
                self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


# --- the writer and the checks ----------------------------------------------------------

def write(conn, seconds: float, rate: float, changes: Iterator[Callable], limit: int | None = None
          ) -> tuple[list, float]:
    """Call the next of ``changes`` (each given a cursor, returning a record) ``rate`` times a
    second for ``seconds`` (or ``limit`` times); returns (records, seconds taken)."""
    records = []
    interval = 1.0 / rate
    started = next_at = time.monotonic()
    with conn.cursor() as cur:
        while time.monotonic() - started < seconds and (limit is None or len(records) < limit):
            records.append(next(changes)(cur))
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
    return records, time.monotonic() - started


def check_renames(store: Bookstore, renames: list[tuple[int, str]], events: list[list], cell: Cell,
                  closed: Collection[int] = ()) -> None:
    """Fill ``cell``'s completeness and latency from the (book id, title) renames and the
    clients' events; ``closed``: clients whose connection ended (their missing changes are
    also counted in ``missing_closed``)."""
    expected: dict[str, dict[str, float]] = {}  # book id -> {title: commit time}
    for book_id, title in renames:
        expected.setdefault(str(book_id), {})[title] = float(title)
    got: dict[str, set[str]] = {}
    for client, kind, collection, doc, fields, received in events:
        title = (fields or {}).get("title")
        if (store.owner.get((collection, doc)) != client or kind != "changed" or collection != BOOKS
                or title not in expected.get(doc, {}) or title in got.get(doc, ())):
            cell.extra += 1
            continue
        got.setdefault(doc, set()).add(title)
        cell.latencies.append(received - float(title))
    for doc, titles in expected.items():
        newest = max((float(t) for t in got.get(doc, ())), default=None)
        for title, committed in titles.items():
            if title in got.get(doc, ()):
                continue
            if newest is not None and newest > committed:
                cell.coalesced += 1
            else:
                cell.missing += 1
                cell.missing_closed += store.owner[(BOOKS, doc)] in closed
                if len(cell.missed) < 3:
                    cell.missed.append(f"book {doc} -> {title} at client {store.owner[(BOOKS, doc)]}")


def check_moves(store: Bookstore, moves: list[tuple[int, float]], events: list[list], cell: Cell,
                closed: Collection[int] = ()) -> None:
    """The same for (client number, commit time) email moves: that client, and no other,
    must get ``removed`` for the author and each of its books."""
    wanted: dict[tuple[str, str], tuple[int, float]] = {}
    for client, committed in moves:
        wanted[(AUTHORS, str(store.author_ids[client]))] = (client, committed)
        for book_id in store.book_ids[client]:
            wanted[(BOOKS, str(book_id))] = (client, committed)
    seen: set[tuple[str, str]] = set()
    for client, kind, collection, doc, _fields, received in events:
        key = (collection, doc)
        if kind != "removed" or key not in wanted or wanted[key][0] != client or key in seen:
            cell.extra += 1
            continue
        seen.add(key)
        if collection == AUTHORS:
            cell.latencies.append(received - wanted[key][1])
    for client, _ in moves:
        lacking = [f"{collection.split('.')[-1]} {doc}" for (collection, doc), (c, _) in wanted.items()
                   if c == client and (collection, doc) not in seen]
        if lacking:
            cell.missing += 1
            cell.missing_closed += client in closed
            if len(cell.missed) < 3:
                cell.missed.append(f"client {client} kept {', '.join(lacking)}")


# --- the scenario -----------------------------------------------------------------------

def run(settings: Settings, server_args: Sequence[str], shared_url: Callable[[], str], private: bool = True,
        top: int = 0, progress: Callable[[str], None] = lambda text: None) -> Result:
    """Run the scenario (see the module docstring) and return its figures; ``top``: keep
    that many of each cell's most frequent statements (pg_stat_statements only)."""
    import psycopg2

    from ddpctl.testing import LiveServer

    with database(shared_url, private) as db:
        env = {**os.environ, "DATABASE_URL": db.server_url}
        done = subprocess.run([sys.executable, "-m", "ddpctl", "migrate", "--noinput", *server_args[:4]],
                              capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"ddpctl migrate failed ({done.returncode}): {done.stdout}{done.stderr}")
        admin = psycopg2.connect(db.admin_url)
        admin.autocommit = True
        writer = psycopg2.connect(db.writer_url)
        writer.autocommit = True
        try:
            store = populate(admin, max(settings.sizes))
            counter = _counter(db, admin)
            result = Result(source=db.source, columns=list(counter.columns))
            with LiveServer(server_args, env={"DATABASE_URL": db.server_url}) as server:
                meter = Meter(counter)
                pids = Pids(server.process.pid, db.pid)
                log = ServerLog(server)
                for size in settings.sizes:
                    progress(f"distinct: {size:,} clients")
                    _run_size(settings, server.port, size, store, meter, pids, log, writer, result, top, progress)
        finally:
            writer.close()
            admin.close()
    return result


def _run_size(settings: Settings, port: int, size: int, store: Bookstore, meter: Meter, pids: Pids,
              log: ServerLog, writer, result: Result, top: int, progress: Callable[[str], None]) -> None:
    _put_emails_back(store, None, writer, meter, settings)  # before the clients subscribe: no wait
    clients = Clients(port, size, settings.ready_timeout)
    try:
        ready = Ready(size, None, connect_seconds=clients.connect_seconds)
        result.ready.append(ready)
        if clients.not_connected:
            ready.not_ready, ready.reasons, ready.server_log = clients.not_connected, clients.reasons, log.news()
            result.cells.append(Cell(size, "-", 0, note=f"skipped: {clients.not_connected:,} clients could not "
                                                         "connect"))
            return
        before = meter.read()
        clock = CpuClock(pids.server)
        clients.subscribe()
        ready.server_cpu = clock.percent() or 0.0
        meter.touched()
        ready.server_log = log.news()
        if clients.not_ready:
            ready.not_ready, ready.reasons = clients.not_ready, clients.reasons
            result.cells.append(Cell(size, "-", 0, note=f"skipped: {clients.not_ready:,} clients not ready after "
                                                         f"{clients.ready_seconds:.0f} s"))
            return
        ready.seconds, ready.spread = clients.ready_seconds, clients.spread
        after = meter.read()
        ready.counts, _ = meter.counts(before, after, clients.ready_seconds, size)
        ready.idle = meter.measure_idle(settings.idle_seconds)
        rng = random.Random(size)
        books = [(i, b) for i in range(size) for b in store.book_ids[i]]

        def renames() -> Iterator[Callable]:
            while True:
                rng.shuffle(books)
                for _, book_id in books:
                    def rename(cur, book_id=book_id):
                        title = repr(time.time())
                        cur.execute(f"{MARK}UPDATE bookstore_book SET title = %s WHERE id = %s", [title, book_id])
                        store.titles[book_id] = title
                        return book_id, title
                    yield rename

        def moves(limit: int) -> Iterator[Callable]:
            """Moves of authors not moved yet (after putting every email back, now, if too
            few are left)."""
            available = [c for c in range(size) if c not in store.moved]
            if len(available) < limit:
                _put_emails_back(store, clients, writer, meter, settings)
                available = list(range(size))
            rng.shuffle(available)

            def move(cur, client):
                committed = time.time()
                cur.execute(f"{MARK}UPDATE bookstore_author SET email = %s WHERE id = %s",
                            [MOVED.replace("{i}", str(client)), store.author_ids[client]])
                store.moved.add(client)
                return client, committed
            return (functools.partial(move, client=client) for client in available)

        plan = [("rename", rate) for rate in settings.rates] + [("email", rate) for rate in settings.rates]
        rename_stream = renames()
        stopped = ""
        closed_before = 0
        for change, rate in plan:
            cell = Cell(size, change, rate)
            if stopped:
                cell.note = stopped
                result.cells.append(cell)
                continue
            progress(f"distinct: {size:,} clients, {change} at {rate}/s")
            limit = min(int(rate * settings.seconds), size) if change == "email" else None
            stopped = _run_cell(cell, settings, store, meter, pids, writer, clients,
                                rename_stream if change == "rename" else moves(limit), limit, top)
            if len(clients.closed) > closed_before:
                cell.add_note(f"{len(clients.closed) - closed_before:,} client connections ended "
                              f"({len(clients.closed):,} in all: {clients.errors})")
            closed_before = len(clients.closed)
            if server_log := log.news():
                cell.add_note(f"server log: {server_log}")
            result.cells.append(cell)
    finally:
        clients.close()


def _run_cell(cell: Cell, settings: Settings, store: Bookstore, meter: Meter, pids: Pids, writer,
              clients: Clients, changes: Iterator[Callable], limit: int | None, top: int) -> str:
    """Measure one cell (at most ``limit`` changes); returns why the next cells of this
    size are skipped ('' if they are not)."""
    before = meter.read()
    server_clock, database_clock = CpuClock(pids.server), CpuClock(pids.database)
    records, cell.seconds = write(writer, settings.seconds, cell.rate, changes, limit)
    written = time.monotonic()
    meter.touched()
    cell.changes = len(records)
    if cell.change == "rename":
        finals = {book_id: title for book_id, title in records}
        expect = [[store.owner[(BOOKS, str(b))], BOOKS, str(b), "title", t] for b, t in finals.items()]
    else:
        expect = [[client, collection, str(doc), "title" if collection == BOOKS else "email", None]
                  for client, _ in records
                  for collection, doc in [(AUTHORS, store.author_ids[client]),
                                          *((BOOKS, b) for b in store.book_ids[client])]]
    marks: dict = {}

    def at_reached() -> None:
        marks["at"] = time.monotonic()
        cell.server_cpu = server_clock.percent() or 0.0
        cell.database_cpu = database_clock.percent()
        if not meter.counter.flush_wait:
            marks["after"] = meter.read()

    reached, unmet, events = clients.collect(expect, settings.drain_cap, settings.grace, at_reached)
    after = marks.get("after") or meter.read()
    cell.drain = marks["at"] - written
    cell.counts, delta = meter.counts(before, after, marks["at"] - before[0], cell.changes,
                                      writer_changes=cell.changes)
    if top and isinstance(meter.counter, StatementCounter):
        cell.top = sorted(((calls / max(1, cell.changes), " ".join(query.split())[:100])
                           for calls, query in delta.values()), reverse=True)[:top]
    if cell.change == "rename":
        check_renames(store, records, events, cell, clients.closed)
    else:
        check_moves(store, records, events, cell, clients.closed)
    if unmet:
        cell.note = f"drain cap: {unmet:,} documents not in their final state {settings.drain_cap:.0f} s after writing"
        return f"skipped: the {cell.change} cell at {cell.rate}/s did not drain within {settings.drain_cap:.0f} s"
    return ""


def _put_emails_back(store: Bookstore, clients: Clients | None, writer, meter: Meter, settings: Settings) -> None:
    """Give the moved authors their emails back (one statement) and wait until their
    ``clients`` (if any) have the documents again; not measured."""
    moved, store.moved = sorted(store.moved), set()
    if not moved:
        return
    with writer.cursor() as cur:
        cur.execute(f"{MARK}UPDATE bookstore_author SET email = replace(email, 'moved-', 'author-') "
                    "WHERE email LIKE 'moved-%%'")
    meter.touched()
    if clients is None:
        return
    expect = [[client, AUTHORS, str(store.author_ids[client]), "email", EMAIL.replace("{i}", str(client))]
              for client in moved]
    expect += [[client, BOOKS, str(b), "title", store.titles[b]] for client in moved for b in store.book_ids[client]]
    _, unmet, _ = clients.collect(expect, settings.drain_cap, settings.grace, lambda: None)
    if unmet:  # the next size's clients get them when they subscribe
        logger.warning("%d documents had not come back %.0f s after the emails were restored",
                       unmet, settings.drain_cap)


# --- the report -------------------------------------------------------------------------

def _percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def format_result(result: Result) -> str:
    """The scenario's own table (text, several lines)."""
    lines = [f"\ndistinct subscriptions: N clients, each subscribed to {PUBLICATION} with its own author's email "
             f"({BOOKS_PER_AUTHOR} books each)",
             f"database counts per change: {result.source}"]
    for ready in result.ready:
        log = f"; server log: {ready.server_log}" if ready.server_log else ""
        if ready.seconds is None:
            lines.append(f"  initial subscriptions, {ready.clients:,} clients (connected in {ready.connect_seconds:.1f} s):"
                         f" {ready.not_ready:,} not connected or not ready: {ready.reasons}{log}")
            continue
        counts = ", ".join(f"{v:,.1f} {k}" for k, v in ready.counts.items())
        idle = ", ".join(f"{v:,.1f} {k}/s" for k, v in ready.idle.items())
        spread = "/".join(f"{v:.1f}" for v in ready.spread.values())
        lines.append(f"  initial subscriptions, {ready.clients:,} clients subscribing at once: all ready after "
                     f"{ready.seconds:,.2f} s (p50/p90/p99 {spread} s; {counts} per subscription; "
                     f"server CPU {ready.server_cpu:.0f}%; "
                     f"connecting them took {ready.connect_seconds:.1f} s before); idle server: {idle}{log}")
    head = (f"  {'clients':>7}  {'change':<6}  {'rate/s':>6}  {'changes':>7}  "
            + "  ".join(f"{c + '/change':>13}" for c in result.columns)
            + f"  {'missing':>7}  {'extra':>5}  {'p50 ms':>8}  {'p99 ms':>8}  {'server CPU':>10}  {'PG CPU':>6}  notes")
    lines.append(head)
    for cell in result.cells:
        if not cell.changes:
            lines.append(f"  {cell.clients:>7,}  {cell.change:<6}  {cell.rate:>6}  {'-':>7}  {cell.note}")
            continue
        notes = [f"{cell.changes / cell.seconds:.0f}/s written over {cell.seconds:.1f} s, drained "
                 f"{cell.drain:.1f} s after"]
        if cell.coalesced:
            notes.append(f"{cell.coalesced} coalesced")
        if cell.missing_closed:
            notes.append(f"{cell.missing_closed:,} of the missing at clients whose connection had ended")
        if cell.missed:
            notes.append("missing: " + "; ".join(cell.missed))
        if cell.note:
            notes.append(cell.note)
        database_cpu = f"{cell.database_cpu:.0f}%" if cell.database_cpu is not None else "-"
        lines.append(f"  {cell.clients:>7,}  {cell.change:<6}  {cell.rate:>6}  {cell.changes:>7,}  "
                     + "  ".join(f"{cell.counts.get(c, 0):>13,.1f}" for c in result.columns)
                     + f"  {cell.missing:>7,}  {cell.extra:>5,}  {_percentile(cell.latencies, 0.5) * 1000:>8.1f}  "
                     f"{_percentile(cell.latencies, 0.99) * 1000:>8.1f}  {cell.server_cpu:>9.0f}%  {database_cpu:>6}  "
                     + "; ".join(notes))
        for calls, query in cell.top:
            lines.append(f"{'':>12}{calls:>10,.2f}  {query}")
    return "\n".join(lines)
