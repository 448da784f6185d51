"""The ddpctl benchmark: one command, one table.

    python bench/ddpbench.py            # full sizes (takes a few minutes)
    python bench/ddpbench.py --quick    # smaller sizes, for a smoke run
    python bench/ddpbench.py --quick --only open-transaction   # one scenario
    python bench/ddpbench.py --only distinct   # N clients with subscriptions of their own (bench/distinct.py)
    python bench/ddpbench.py --only initial --repeat 3   # initial subscription of 10,000 docs, 3 times
    python bench/ddpbench.py --only latency --profile /tmp/prof   # 20 and 100 writes/s, py-spy per cell
    python bench/ddpbench.py --only fan-out --clients 500         # saturated fan-out, 500 clients
    python bench/ddpbench.py --only idle-memory                   # 10,000 idle connections held

Server (``ddpctl serve``, one process), PostgreSQL, writer (this process, Django ORM
``save()``) and load generator (``bench/loadgen.py``, gevent clients) all run on this
machine.  Uses ``$DATABASE_URL``'s server if set (a database ``ddpctl_bench``, or
``$DDPCTL_BENCH_DATABASE``, is created on it), else an embedded PostgreSQL in the temp directory.  Every figure counts
delivery: "complete" says how many clients ended with the last value written.  The
"distinct subscriptions" scenario (``bench/distinct.py``, its own table) runs last, with its
own server, in a private PostgreSQL cluster with pg_stat_statements when the system's
PostgreSQL binaries are installed (``--shared-database``: in the server above instead).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "examples" / "bookstore")]


def database_url(suffix: str = "") -> str:
    """A new, empty database (``ddpctl_bench`` or ``$DDPCTL_BENCH_DATABASE``, + ``suffix``)."""
    base = os.environ.get("DATABASE_URL")
    if not base:
        from ddpctl.database import embedded_server_url
        base = embedded_server_url(Path(tempfile.gettempdir()) / f"ddpctl-bench-pgdata-{os.getuid()}")
    import psycopg2
    name = os.environ.get("DDPCTL_BENCH_DATABASE", "ddpctl_bench") + suffix
    admin = psycopg2.connect(base)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{name}"))


SERVER_ARGS = ["--settings", "bookstore.settings", "--pythonpath", str(ROOT / "examples" / "bookstore"),
               "--log-level", "warning"]


class LoadGen:
    def __init__(self, port: int, clients: int, publication: str | None):
        args = [sys.executable, str(ROOT / "bench" / "loadgen.py"), "127.0.0.1", str(port), str(clients)]
        if publication:
            args.append(publication)
        args.append("--cpu")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"load generator failed: {line!r}")
        words = line.split(" ", 2)
        self.ready_seconds = float(words[1])
        self.cpu_seconds = json.loads(words[2]).get("cpu", 0.0)  # its own, from connect to READY

    def stop(self, final_title: str | None) -> dict:
        self.proc.stdin.write(f"STOP {final_title or ''}\n")
        self.proc.stdin.flush()
        result = json.loads(self.proc.stdout.readline())
        self.proc.wait(10)
        return result


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def writer(book, seconds: float, rate: float | None = None, threads: int = 1, others=()) -> tuple[int, str]:
    """``save()`` the book (round robin with ``others``) with its commit time as title;
    returns (saves, final title), the last save being ``book``'s."""
    from django.db import connections

    count = [0]
    end = time.monotonic() + seconds

    def loop():
        from bookstore.models import Book
        targets = [Book.objects.get(pk=x.pk) for x in (book, *others)]
        interval = 1.0 / rate if rate else 0
        next_at = time.monotonic()
        while time.monotonic() < end:
            b = targets[count[0] % len(targets)]
            b.title = repr(time.time())
            b.save(update_fields=["title"])
            count[0] += 1
            if interval:
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))
        connections.close_all()

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    from bookstore.models import Book
    b = Book.objects.get(pk=book.pk)
    final = repr(time.time())
    b.title = final
    b.save(update_fields=["title"])
    return count[0], final


def open_transaction_latency(port: int, book, clients: int, seconds: float, import_rows: int) -> tuple[str, str, str]:
    """Commit-to-client latency at 20 writes/s while one session sits idle inside a
    transaction (it wrote a row) and after a bulk import of ``import_rows`` rows rolled back
    (issue 9.6: the changelog reader must not pay for either)."""
    import psycopg2
    from django.db import connection

    dsn = connection.get_connection_params()
    dsn.pop("cursor_factory", None)
    idle, bulk = psycopg2.connect(**dsn), psycopg2.connect(**dsn)
    try:
        with idle.cursor() as cur:
            cur.execute("INSERT INTO bookstore_author (name, email) VALUES ('idle', 'idle@bench')")
        with bulk.cursor() as cur:
            cur.execute("INSERT INTO bookstore_author (name, email) "
                        "SELECT 'import', 'import-' || g || '@bench' FROM generate_series(1, %s) g", [import_rows])
        bulk.rollback()
        gen = LoadGen(port, clients, "AllBooks")
        saves, final = writer(book, seconds, rate=20)
        result = gen.stop(final)
    finally:
        idle.rollback()
        idle.close()
        bulk.close()
    lat = result["latencies"]
    return (f"commit-to-client p50 / p99, {clients} clients, idle transaction + {import_rows:,}-row rollback",
            f"{percentile(lat, 0.5) * 1000:.1f} / {percentile(lat, 0.99) * 1000:.1f} ms",
            f"{len(lat):,} samples; complete {result['complete']}/{result['clients']}")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def slow_consumer(server, seconds: float) -> tuple[str, str]:
    """A client that subscribes to AllBooks and never reads, while 20 KiB documents change:
    the server's peak RSS growth, and how (and when) the client was closed."""
    import base64
    import socket

    from django.db import connection

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    for text in ('{"msg":"connect","version":"1","support":["1"]}',
                 '{"msg":"sub","id":"s","name":"AllBooks","params":[]}'):
        payload, mask = text.encode(), os.urandom(4)
        sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    pid = server.process.pid
    baseline = rss_kib(pid)
    for _ in range(20):  # let the server settle (memory of earlier scenarios going back) first
        time.sleep(0.5)
        now = rss_kib(pid)
        if abs(now - baseline) < 1024:
            break
        baseline = now
    peak = baseline
    logged = len(server.output())
    started = time.monotonic()
    closed_after = None
    sent = 0
    with connection.cursor() as cur:
        while time.monotonic() - started < seconds and closed_after is None:
            cur.execute("UPDATE bookstore_book SET blurb = repeat(md5(random()::text || id), 640) "
                        "WHERE id IN (SELECT id FROM bookstore_book ORDER BY id LIMIT 20)")
            sent += 20 * 20480
            for _ in range(5):
                peak = max(peak, rss_kib(pid))
                time.sleep(0.01)
            if "closing connection" in server.output()[logged:]:
                closed_after = time.monotonic() - started
    time.sleep(1.0)
    after = rss_kib(pid)
    sock.close()
    how = next((line.split(": ", 2)[-1] for line in server.output()[logged:].splitlines()
                if "closing connection" in line), "not closed")
    return (f"{(peak - baseline) / 1024:.0f} MiB peak",
            f"+{(after - baseline) / 1024:.0f} MiB after; {sent / 2**20:.0f} MiB of changes"
            + (f"; closed after {closed_after:.1f} s: {how}" if closed_after is not None else f"; {how}"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def initial_subscription(server, author, docs: int, repeat: int = 1,
                         profile: str | None = None) -> list[tuple[str, str, str]]:
    """One client subscribes to ``AllBooks`` holding ``docs`` books (created as needed),
    ``repeat`` times one after the other (each a new observer: the last subscriber's left):
    docs/s from the ``sub`` to its ``ready`` (connect included), each run and the median,
    and the server's CPU time per document (less sensitive to other load on the machine).
    With ``profile``, one py-spy profile of the server over all the runs."""
    from bookstore.models import Book
    from servercost import run_seconds  # to the nanosecond: a run costs 50-150 ms

    missing = docs - Book.objects.count()
    if missing > 0:
        Book.objects.bulk_create([Book(title=f"doc {i}", author=author) for i in range(missing)])
    pid = server.process.pid
    print(f"[{time.strftime('%H:%M:%S')}] initial subscription: server pid {pid}, "
          f"{Book.objects.count():,} books", file=sys.stderr, flush=True)
    rates, costs, client_costs = [], [], []
    spy = Profile(profile, pid, f"initial-{docs}")
    for _ in range(max(1, repeat)):
        cpu = run_seconds(pid)
        gen = LoadGen(server.port, 1, "AllBooks")
        ready = gen.ready_seconds
        cpu = run_seconds(pid) - cpu
        client_costs.append(gen.cpu_seconds / docs * 1e6)  # from its connect to READY
        gen.stop(None)
        rates.append(docs / ready)
        costs.append(cpu / docs * 1e6)
        print(f"[{time.strftime('%H:%M:%S')}] initial subscription: {docs / ready:,.0f} docs/s "
              f"(ready after {ready * 1000:.0f} ms; server CPU {cpu * 1000:.0f} ms)", file=sys.stderr, flush=True)
    spy.stop()
    median = sorted(rates)[len(rates) // 2]
    cost = sorted(costs)[len(costs) // 2]
    runs = f"; runs {', '.join(f'{r:,.0f}' for r in rates)}" if len(rates) > 1 else ""
    return [(f"initial subscription, {docs:,} docs", f"{median:,.0f} docs/s",
             f"median of {len(rates)}, ready after {docs / median * 1000:.0f} ms (connect included){runs}"),
            ("server CPU per document, initial subscription", f"{cost:.1f} us",
             f"median of {len(costs)} (user + system, connect included: {1e6 / cost:,.0f} docs per CPU-second); "
             f"load generator {sorted(client_costs)[len(client_costs) // 2]:.1f} us (connect to ready)")]


class Profile:
    """``py-spy record`` of the server while a cell runs (``--profile DIR``), else nothing."""

    def __init__(self, directory: str | None, pid: int, name: str) -> None:
        self.proc = None
        if directory:
            Path(directory).mkdir(parents=True, exist_ok=True)
            out = Path(directory) / f"{name}.txt"
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--format", "raw",
                 "--rate", os.environ.get("DDPCTL_BENCH_PROFILE_RATE", "200"), "--nonblocking", "--output", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)


def latency_cells(server, book, others, clients: int, seconds: float,
                  profile: str | None) -> list[tuple[str, str, str]]:
    """Delivery, commit-to-client latency and order across documents at 20 and 100 writes/s
    (one writer thread, round robin over ``book`` and ``others``: commit order is title
    order), and the server's CPU time per delivered message."""
    rows = []
    for rate in (20, 100):
        gen = LoadGen(server.port, clients, "AllBooks")
        pid = server.process.pid
        spy = Profile(profile, pid, f"latency-{clients}-{rate}")
        cpu, client_cpu = cpu_seconds(pid), cpu_seconds(gen.proc.pid)
        saves, final = writer(book, seconds, rate=rate, others=others)
        cpu, client_cpu = cpu_seconds(pid) - cpu, cpu_seconds(gen.proc.pid) - client_cpu
        spy.stop()
        result = gen.stop(final)
        lat = result["latencies"]
        rows.append((f"delivered msgs/s, {clients} clients, {rate} writes/s",
                     f"{result['messages'] / seconds:,.0f}",
                     f"complete {result['complete']}/{result['clients']}; server CPU "
                     f"{cpu * 1e6 / max(1, result['messages']):.1f} us per message; load generator "
                     f"{client_cpu / seconds:.0%} of a core"))
        rows.append((f"commit-to-client p50 / p99, {clients} clients, {rate} writes/s",
                     f"{percentile(lat, 0.5) * 1000:.1f} / {percentile(lat, 0.99) * 1000:.1f} ms",
                     f"{len(lat):,} samples; {result['inversions']:,} order inversions across documents"))
    return rows


def saturated_cell(server, book, clients: int, seconds: float, profile: str | None) -> tuple[str, str, str]:
    """Fan-out from one server process while two writer threads save as fast as they can."""
    gen = LoadGen(server.port, clients, "AllBooks")
    pid = server.process.pid
    spy = Profile(profile, pid, f"saturated-{clients}")
    cpu = cpu_seconds(pid)
    saves, final = writer(book, seconds, threads=2)
    result = gen.stop(final)
    cpu = cpu_seconds(pid) - cpu
    spy.stop()
    elapsed = seconds + result["drain_seconds"]
    return (f"saturated fan-out msgs/s, {clients} clients", f"{result['messages'] / elapsed:,.0f}",
            f"{saves / seconds:,.0f} saves/s; complete {result['complete']}/{result['clients']}; "
            f"server CPU {cpu * 1e6 / max(1, result['messages']):.1f} us per message")


def idle_memory_cell(server, idle: int) -> tuple[str, str, str]:
    """Server RSS growth per connection, ``idle`` DDP connections held (connected, no sub)."""
    before = rss_kib(server.process.pid)
    gen = LoadGen(server.port, idle, None)
    time.sleep(1)
    after = rss_kib(server.process.pid)
    gen.stop(None)
    return (f"memory per idle connection ({idle:,} held)", f"{(after - before) / idle:.1f} KiB",
            f"server RSS {before / 1024:.0f} -> {after / 1024:.0f} MiB")


def distinct_subscriptions(args: argparse.Namespace, base_url: str | None) -> str:
    """Run the "distinct subscriptions" scenario; returns its table.  ``base_url``: the
    server the other scenarios used (``DATABASE_URL`` before they replaced it)."""
    import distinct

    def shared_url() -> str:
        if base_url:
            os.environ["DATABASE_URL"] = base_url
        else:
            os.environ.pop("DATABASE_URL", None)
        return database_url("_distinct")

    def progress(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    settings = distinct.Settings.for_run(args.quick)
    if args.distinct_sizes:
        settings.sizes = args.distinct_sizes
    result = distinct.run(settings, SERVER_ARGS, shared_url,
                          private=not args.shared_database, top=args.top_statements, progress=progress)
    return distinct.format_result(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and shorter runs")
    parser.add_argument("--only", choices=["open-transaction", "latency", "fan-out", "idle-memory", "initial",
                                           "distinct"],
                        help="run only this scenario (latency: 20 and 100 writes/s; fan-out: saturated; "
                             "initial: the initial subscription)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="initial: subscribe N times (one client at a time, a new observer each), "
                             "print each and the median")
    parser.add_argument("--initial-docs", type=int, default=0, metavar="N",
                        help="initial: documents in the subscription (default 10,000; --quick: 2,000)")
    parser.add_argument("--clients", type=int, metavar="N",
                        help="latency, fan-out: N clients (default 1,000; --quick 200); idle-memory: N held")
    parser.add_argument("--profile", metavar="DIR",
                        help="latency, fan-out, initial: record a py-spy profile of the server per cell into DIR")
    parser.add_argument("--shared-database", action="store_true",
                        help="distinct: use the benchmark's PostgreSQL server, not a private cluster")
    parser.add_argument("--top-statements", type=int, default=0, metavar="N",
                        help="distinct: list each cell's N most frequent statements (pg_stat_statements)")
    parser.add_argument("--distinct-sizes", metavar="N,N,...",
                        type=lambda text: tuple(int(n) for n in text.split(",")),
                        help="distinct: these numbers of clients instead of 100,1000,5000 (--quick: 50,300)")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C: servers, load generators and a private cluster are stopped
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    base_url = os.environ.get("DATABASE_URL")
    if args.only == "distinct":
        print(distinct_subscriptions(args, base_url))
        return
    big_subs, fan_clients, idle, docs, seconds, import_rows = (
        (500, 200, 1000, 2000, 3, 20_000) if args.quick else (5000, 1000, 10000, 10000, 10, 200_000))
    if args.clients:
        fan_clients = idle = args.clients

    url = database_url()
    os.environ["DATABASE_URL"] = url
    subprocess.run([sys.executable, "-m", "ddpctl", "migrate", "--noinput", *SERVER_ARGS[:4]],
                   check=True, capture_output=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bookstore.settings")
    import django
    django.setup()
    from bookstore.models import Author, Book
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from ddpctl.testing import LiveServer

    author = Author.objects.create(name="Bench", email="bench@example.com")
    book = Book.objects.create(title="start", author=author)
    rows: list[tuple[str, str, str]] = []

    with LiveServer(SERVER_ARGS) as server:
        if args.only == "initial":
            rows.extend(initial_subscription(server, author, args.initial_docs or docs, args.repeat, args.profile))
            return report(rows, args.quick)
        if args.only == "open-transaction":
            rows.append(open_transaction_latency(server.port, book, fan_clients, seconds, import_rows))
            return report(rows, args.quick)
        if args.only in ("latency", "fan-out", "idle-memory"):
            others = [Book.objects.create(title="other", author=author) for _ in range(9)]
            if args.only == "latency":
                rows.extend(latency_cells(server, book, others, fan_clients, seconds, args.profile))
            elif args.only == "fan-out":
                rows.append(saturated_cell(server, book, fan_clients, seconds, args.profile))
            else:
                rows.append(idle_memory_cell(server, idle))
            return report(rows, args.quick)
        # 1. saves/s and SQL statements per save with 0, 50 and many subscribers
        for subs in (0, 50, big_subs):
            gen = LoadGen(server.port, subs, "AllBooks") if subs else None
            with CaptureQueriesContext(connection) as queries:
                book.title = "counted"
                book.save(update_fields=["title"])
            saves, final = writer(book, seconds)
            result = gen.stop(final) if gen else {"complete": 0, "clients": 0}
            rows.append((f"saves/s with {subs} subscribers", f"{saves / seconds:,.0f}",
                         f"{len(queries)} SQL statement(s) per save; complete {result['complete']}/{result['clients']}"))

        # 2. delivery, commit-to-client latency and order across documents, 20 and 100 writes/s
        #    (one writer thread, round robin over 10 books: commit order is title order)
        others = [Book.objects.create(title="other", author=author) for _ in range(9)]
        rows.extend(latency_cells(server, book, others, fan_clients, seconds, args.profile))
        # 6. latency behind an idle transaction and a rolled-back bulk import (before 4 adds
        #    its documents: every client here subscribes to every book)
        rows.append(open_transaction_latency(server.port, book, fan_clients, seconds, import_rows))

        # 3. saturated fan-out from one server process
        rows.append(saturated_cell(server, book, fan_clients, seconds, args.profile))

        # 7. a client that never reads, sent 20 KiB documents (default --send-buffer-limit 64M);
        #    before 4 and 5, whose memory the server may still be giving back later
        peak, note = slow_consumer(server, 30 if not args.quick else 15)
        rows.append(("slow consumer: server RSS growth, 20 KiB docs", peak, note))

        # 4. initial subscription
        rows.extend(initial_subscription(server, author, docs, args.repeat, args.profile))

        # 5. memory per idle connection
        rows.append(idle_memory_cell(server, idle))

    report(rows, args.quick)
    print(distinct_subscriptions(args, base_url))


def report(rows: list[tuple[str, str, str]], quick: bool) -> None:
    from django.db import connection

    width = max(len(r[0]) for r in rows)
    print(f"\nddpctl benchmark ({'quick' if quick else 'full'}; {os.cpu_count()} cores; "
          f"PostgreSQL {connection.pg_version // 10000})")
    print(f"{'metric'.ljust(width)}  {'measured':>14}  notes")
    for name, value, note in rows:
        print(f"{name.ljust(width)}  {value:>14}  {note}")


if __name__ == "__main__":
    main()
