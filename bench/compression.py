"""permessage-deflate: bytes on the wire and server CPU per delivered message, on vs off.

    python bench/compression.py                  # 10,000 books, 10 clients, 500 changes of each kind
    python bench/compression.py --quick          # 2,000 books, 4 clients, 100 changes
    python bench/compression.py --docs 10000 --clients 50 --changes 1000

The same bookstore data (books with a title, an author, pages, a date and a blurb of 0 to
60 words) is served by one ``ddpctl serve`` with ``--no-websocket-compression``, then one
with compression (the default); N raw WebSocket clients (gevent, in a subprocess: this
script with ``--clients-worker``) offer ``permessage-deflate; client_max_window_bits`` as
browsers do and subscribe to ``AllBooks``.  Measured for the initial subscription, then
for live changes of two kinds, each saved through the ORM one after the other:
``pages`` only (small ``changed`` messages, under the compression threshold) and a new
``blurb`` (a few hundred bytes).  The initial subscription is measured twice: N clients
subscribing at once (their documents' frames are compressed once, for the first of them),
then N more clients one after the other (the shared cache of compressed frames holds
them all: they are compressed once; a publication bigger than the cache is compressed
again for each client, at the cost "first client" in the frame building line).  "wire B/msg" counts every byte the clients read from
their sockets (frame headers included) per DDP message delivered; "server CPU us/msg" is
the server process's user+system time over the phase per message delivered (so it also
holds the server's observer and PostgreSQL-client work, the same in both modes).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "examples" / "bookstore"), str(ROOT / "bench")]

WORDS = ("the of and a to in is you that it he was for on are as with his they at be this have from "
         "or one had by word but not what all were we when your can said there use an each which she "
         "do how their if will up other about out many then them these so some her would make like him "
         "into time has look two more write go see number no way could people my than first water been "
         "call who oil its now find long down day did get come made may part river garden winter letter "
         "station mystery journey kingdom history machine ocean mountain silver").split()
OFFER = "permessage-deflate; client_max_window_bits"


def words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(low, high)))


# -- the clients (a subprocess) ----------------------------------------------------------

def clients_worker(port: int, count: int) -> None:
    """Print ``CONNECTED``; on ``SUB`` subscribe all, print ``READY <json counters>``;
    on ``ONEBYONE`` connect as many new clients, one at a time, each subscribing and waiting
    for its ``ready`` before the next connects, print ``READY <json counters>``;
    on ``WAIT <title>`` wait until every client saw that title, print the counters since
    the last report; ``EXIT``."""
    from gevent import monkey
    monkey.patch_all()
    import base64
    import socket
    import struct
    import zlib

    import gevent
    from gevent.event import Event

    counters = {"wire": 0, "messages": 0, "inflated": 0, "compressed": 0}

    class Client:
        def __init__(self) -> None:
            self.sock = socket.create_connection(("127.0.0.1", port))
            key = base64.b64encode(os.urandom(16)).decode()
            self.sock.sendall((f"GET /websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                               f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: {OFFER}\r\n\r\n").encode())
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                buffer += self.sock.recv(4096)
            head, self.buffer = buffer.split(b"\r\n\r\n", 1)
            self.deflate = b"permessage-deflate" in head
            self.ready, self.seen = Event(), {}
            self.send(b'{"msg":"connect","version":"1","support":["1"]}')
            gevent.spawn(self.read)

        def send(self, payload: bytes) -> None:
            n = len(payload)
            head = bytes((0x81, 0x80 | n)) if n < 126 else struct.pack("!BBH", 0x81, 0xFE, n)
            self.sock.sendall(head + b"\0\0\0\0" + payload)  # a zero mask leaves the payload as is

        def read(self) -> None:
            data = self.buffer
            while True:
                i = 0
                while len(data) - i >= 2:
                    first, n, start = data[i], data[i + 1] & 0x7F, i + 2
                    if n == 126:
                        if len(data) - i < 4:
                            break
                        n, start = struct.unpack_from("!H", data, i + 2)[0], i + 4
                    elif n == 127:
                        if len(data) - i < 10:
                            break
                        n, start = struct.unpack_from("!Q", data, i + 2)[0], i + 10
                    if len(data) < start + n:
                        break
                    self.message(first, data[start:start + n])
                    i = start + n
                data = data[i:]
                chunk = self.sock.recv(262144)
                if not chunk:
                    return
                counters["wire"] += len(chunk)
                data += chunk

        def message(self, first: int, payload: bytes) -> None:
            if first & 0x0F != 1:
                return
            if first & 0x40:
                counters["compressed"] += 1
                payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
            counters["messages"] += 1
            kind = payload[8:payload.index(b'"', 8)].decode() if payload.startswith(b'{"msg":"') else "?"
            counters[kind] = counters.get(kind, 0) + 1
            counters["inflated"] += len(payload)
            if payload.startswith(b'{"msg":"ping"'):
                self.send(b'{"msg":"pong"}')
            elif payload.startswith(b'{"msg":"ready"'):
                self.ready.set()
            elif b'"final-' in payload:
                title = json.loads(payload)["fields"]["title"]
                self.seen[title] = True
                waiting.get(title, Event()).set()

    waiting: dict[str, Event] = {}
    clients = [Client() for _ in range(count)]
    print("CONNECTED", sum(c.deflate for c in clients), flush=True)

    def report(tag: str) -> None:
        print(tag, json.dumps(counters), flush=True)
        counters.clear()
        counters.update({"wire": 0, "messages": 0, "inflated": 0, "compressed": 0})

    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "SUB":
            for c in clients:
                c.send(b'{"msg":"sub","id":"all","name":"AllBooks","params":[]}')
            for c in clients:
                c.ready.wait()
            report("READY")
        elif command == "ONEBYONE":
            for _ in range(count):
                client = Client()
                client.send(b'{"msg":"sub","id":"all","name":"AllBooks","params":[]}')
                client.ready.wait()
                clients.append(client)
            report("READY")
        elif command == "WAIT":
            for c in clients:
                while arg not in c.seen:
                    event = waiting[arg] = waiting.get(arg) or Event()
                    event.wait(0.5)
            report("DONE")
        elif command == "EXIT":
            return


# -- the benchmark --------------------------------------------------------------------------

class Worker:
    def __init__(self, port: int, clients: int) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--clients-worker", str(port), str(clients)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "CONNECTED":
            raise RuntimeError(f"clients failed: {line}")
        self.deflating = int(line[1])

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline().split(" ", 1)[1])

    def stop(self) -> None:
        self.proc.stdin.write("EXIT\n")
        self.proc.stdin.flush()
        self.proc.wait(10)


def run_mode(compress: bool, args: argparse.Namespace, books: list, rng: random.Random) -> list[dict]:
    from ddpbench import SERVER_ARGS
    from servercost import cpu_seconds

    from ddpctl.testing import LiveServer

    flag = "--websocket-compression" if compress else "--no-websocket-compression"
    rows = []
    with LiveServer([*SERVER_ARGS, flag]) as server:
        worker = Worker(server.port, args.clients)
        try:
            assert worker.deflating == (args.clients if compress else 0), worker.deflating
            pid = server.process.pid
            cpu = cpu_seconds(pid)
            counts = worker.ask("SUB")
            rows.append({"phase": f"initial subscription, {len(books):,} docs", **counts,
                         "cpu": cpu_seconds(pid) - cpu})
            cpu = cpu_seconds(pid)
            counts = worker.ask("ONEBYONE")
            rows.append({"phase": "  the same, one client at a time", **counts, "cpu": cpu_seconds(pid) - cpu})
            for kind in ("pages", "blurb"):
                cpu = cpu_seconds(pid)
                for _ in range(args.changes):
                    book = books[rng.randrange(len(books))]
                    if kind == "pages":
                        book.pages += 1
                    else:
                        book.blurb = words(rng, 20, 60)
                    book.save(update_fields=[kind])
                final = books[0]
                final.title = f"final-{kind}-{time.time()}"
                final.save(update_fields=["title"])
                counts = worker.ask(f"WAIT {final.title}")
                rows.append({"phase": f"live changes: {kind}", **counts, "cpu": cpu_seconds(pid) - cpu})
        finally:
            worker.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 books, 4 clients, 100 changes")
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--changes", type=int, default=500, help="changes of each kind")
    parser.add_argument("--clients-worker", nargs=2, type=int, metavar=("PORT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clients_worker:
        return clients_worker(*args.clients_worker)
    if args.quick:
        args.docs, args.clients, args.changes = 2_000, 4, 100
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    from ddpbench import SERVER_ARGS, database_url
    os.environ["DATABASE_URL"] = database_url("_compression")
    subprocess.run([sys.executable, "-m", "ddpctl", "migrate", "--noinput", *SERVER_ARGS[:4]],
                   check=True, capture_output=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bookstore.settings")
    import datetime

    import django
    django.setup()
    from bookstore.models import Author, Book

    rng = random.Random(7)
    authors = Author.objects.bulk_create([Author(name=words(rng, 2, 3).title(), email=f"author{i}@example.com")
                                          for i in range(200)])
    Book.objects.bulk_create([
        Book(title=words(rng, 2, 6).title(), author=rng.choice(authors), pages=rng.randint(40, 900),
             published=datetime.date(1950, 1, 1) + datetime.timedelta(days=rng.randrange(27_000)),
             blurb=words(rng, 0, 60))
        for _ in range(args.docs)])
    books = list(Book.objects.all())

    # different blurbs in the two runs (the same ones again would change nothing)
    results = {compress: run_mode(compress, args, books, random.Random(11 + compress)) for compress in (False, True)}
    print(f"\npermessage-deflate, {args.clients} clients ({2 * args.clients} for live changes), "
          f"{os.cpu_count()} cores "
          f"(wire: bytes read by the clients; CPU: the server process)")
    print(f"{'phase':34} {'msgs':>9} {'payload B/msg':>13} {'wire B/msg off':>14} {'on':>7} "
          f"{'saved':>6} {'compressed':>10} {'CPU us/msg off':>14} {'on':>7}")
    for off, on in zip(results[False], results[True], strict=True):
        messages = on["messages"] or 1
        # per payload byte: the two runs' documents differ a little (each run's changes stay)
        saved = 1 - (on["wire"] / max(1, on["inflated"])) / (off["wire"] / max(1, off["inflated"]))
        print(f"{on['phase']:34} {on['messages']:9,} {on['inflated'] / messages:13.0f} "
              f"{off['wire'] / max(1, off['messages']):14.0f} {on['wire'] / messages:7.0f} "
              f"{saved:6.0%} {on['compressed'] / messages:10.0%} "
              f"{off['cpu'] * 1e6 / max(1, off['messages']):14.1f} {on['cpu'] * 1e6 / messages:7.1f}")
    send_path_cost(books)


def send_path_cost(books: list) -> None:
    """The frame building alone, in this process: the ``added`` messages of the books."""
    from ddpctl.ddp.messages import stringify
    from ddpctl.server.deflate import COMPRESSION_THRESHOLD, FrameCompressor
    from ddpctl.server.websocket import text_frame

    texts = [stringify({"msg": "added", "collection": "bookstore.book", "id": str(b.pk),
                        "fields": {"title": b.title, "author": b.author_id, "pages": b.pages,
                                   "published": {"$date": 0}, "blurb": b.blurb}}) for b in books]
    compressor = FrameCompressor(max_entries=len(texts) + 1, max_bytes=1 << 30)

    def per_text(build) -> float:
        start = time.process_time()  # CPU time: this machine may be busy with other work
        for text in texts:
            build(text)
        return (time.process_time() - start) * 1e6 / len(texts)

    plain = per_text(lambda t: text_frame(t.encode()))
    miss = per_text(compressor.frame)
    hit = per_text(compressor.frame)
    over = sum(len(t) >= COMPRESSION_THRESHOLD for t in texts)
    rng = random.Random(5)
    samples = texts + [stringify({"msg": "changed", "collection": "bookstore.book", "id": str(rng.randrange(10**5)),
                                  "fields": field}) for field in
                       [{"pages": rng.randint(1, 999)} for _ in range(2000)]
                       + [{"title": words(rng, 1, 12).title()} for _ in range(2000)]]
    sizes: dict[int, list[int]] = {}
    for text in samples:
        payload = text.encode()
        deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
        compressed = len(deflater.compress(payload) + deflater.flush(zlib.Z_SYNC_FLUSH)) - 4
        bucket = next(b for b in (64, 96, 128, 192, 256, 384, 512, 1 << 30) if len(payload) < b)
        totals = sizes.setdefault(bucket, [0, 0, 0])
        totals[0] += 1
        totals[1] += len(payload)
        totals[2] += compressed
    print("deflate saving by message size (each message alone, level 6): " + "; ".join(
        f"{'>=' + str(prev) if bucket == 1 << 30 else '<' + str(bucket)} B: {1 - c / b:.0%} (n={n})"
        for prev, (bucket, (n, b, c)) in zip([0, *sorted(sizes)], sorted(sizes.items()), strict=False)))
    print(f"\nframe building per 'added' message ({len(texts):,}, {over / len(texts):.0%} at or over the "
          f"{COMPRESSION_THRESHOLD}-character threshold): plain {plain:.1f} us; compressed: first client "
          f"{miss:.1f} us, every other client (cache hit) {hit:.1f} us")


if __name__ == "__main__":
    main()
