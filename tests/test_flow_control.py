"""Flow control in bytes: a reading client receives any size of result; a client that does
not read is closed (1008, with a reason) at the byte limit or after the send timeout, and
its memory is freed; other clients keep receiving."""
import base64
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import SERVER_ARGS
from hypothesis import given
from hypothesis import strategies as st

from ddpctl.config import parse_size
from ddpctl.testing import DDPClient

BOOKS = "bookstore.book"


class Closed(Exception):
    def __init__(self, code, reason):
        super().__init__(f"{code} {reason}")
        self.code, self.reason = code, reason


class RawDDP:
    """A bare WebSocket DDP client parsing frames itself: fast enough to count 100,000
    messages, and able to stop reading (with a small receive buffer) like a stalled client."""

    def __init__(self, port, rcvbuf=None, timeout=60.0):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(4096)
        head, rest = head.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.buf = bytearray(rest)
        self.pos = 0
        self.send({"msg": "connect", "version": "1", "support": ["1"]})
        assert self.recv()["msg"] == "connected"

    def send(self, msg):
        payload = json.dumps(msg).encode()
        n = len(payload)
        header = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
                                  if n < 65536 else bytes([0x80 | 127]) + struct.pack("!Q", n))
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _need(self, n):
        while len(self.buf) - self.pos < n:
            if self.pos > 1 << 20:
                del self.buf[:self.pos]
                self.pos = 0
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("connection closed without a close frame")
            self.buf += data

    def frame(self):
        """``(opcode, payload)`` of the next frame (the server's are unmasked, unfragmented)."""
        self._need(2)
        opcode, n = self.buf[self.pos] & 0x0F, self.buf[self.pos + 1] & 0x7F
        head = 2
        if n == 126:
            self._need(4)
            n, head = struct.unpack_from("!H", self.buf, self.pos + 2)[0], 4
        elif n == 127:
            self._need(10)
            n, head = struct.unpack_from("!Q", self.buf, self.pos + 2)[0], 10
        self._need(head + n)
        start = self.pos + head
        payload = bytes(self.buf[start:start + n])
        self.pos = start + n
        return opcode, payload

    def recv(self):
        """The next DDP message; pings are answered; a close frame raises ``Closed``."""
        while True:
            opcode, payload = self.frame()
            if opcode == 0x8:
                raise Closed(int.from_bytes(payload[:2], "big"), payload[2:].decode())
            if opcode != 0x1:
                continue
            msg = json.loads(payload)
            if msg.get("msg") == "ping":
                self.send({"msg": "pong"})
                continue
            return msg

    def close_frame(self):
        """Read (and drop) everything up to the close frame; ``(code, reason)``."""
        with pytest.raises(Closed) as info:
            while True:
                self.recv()
        return info.value.code, info.value.reason

    def close(self):
        self.sock.close()


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def wait_for_output(live, text, timeout=60.0):
    deadline = time.monotonic() + timeout
    while text not in live.output():
        assert time.monotonic() < deadline, f"server never logged {text!r}:\n{live.output()[-3000:]}"
        time.sleep(0.05)


@pytest.fixture
def truncate_after(sql):
    yield
    sql("TRUNCATE bookstore_book_genres, bookstore_book, bookstore_author, testapp_note "
        "RESTART IDENTITY CASCADE")
    # ... and the changelog rows of up to 100,000 inserts, as retention would: later tests'
    # servers should not pay for them.
    sql("DELETE FROM ddpctl_change")


def make_author(sql, email):
    return sql("INSERT INTO bookstore_author (name, email) VALUES ('A', %s) RETURNING id", [email],
               fetch=True)[0][0]


def make_books(sql, author_id, count, blurb="''"):
    sql(f"INSERT INTO bookstore_book (title, author_id, pages, blurb) SELECT 'book ' || i, %s, i, {blurb} "
        "FROM generate_series(1, %s) i", [author_id, count])


def subscribe(client, name, *params):
    """Subscribe and read until ``ready``; returns ``{collection: {id: fields}}``."""
    client.send({"msg": "sub", "id": "s", "name": name, "params": list(params)})
    docs = {}
    while True:
        msg = client.recv()
        if msg["msg"] == "added":
            docs.setdefault(msg["collection"], {})[msg["id"]] = msg.get("fields", {})
        elif msg["msg"] == "ready":
            return docs
        else:
            raise AssertionError(msg)


def fence(client, on_data=None):
    """Call a method and wait for its ``updated``: changes committed before are dispatched.
    Data messages on the way go to ``on_data`` (none are expected without it)."""
    client.send({"msg": "method", "method": "echo", "id": "fence", "params": []})
    replies = set()
    while replies != {"result", "updated"}:
        msg = client.recv()
        if msg["msg"] in ("result", "updated"):
            replies.add(msg["msg"])
        else:
            assert on_data is not None, msg
            on_data(msg)


# -- a client that reads receives everything, with default options ------------------------

def test_100000_documents_reach_a_reading_client(server, sql, clean, truncate_after):
    author = make_author(sql, "big@example.com")
    make_books(sql, author, 100_000)
    client = RawDDP(server.port)
    try:
        docs = subscribe(client, "AllBooks")
    finally:
        client.close()
    ids = {str(row[0]) for row in sql("SELECT id FROM bookstore_book", fetch=True)}
    assert len(ids) == 100_000 and set(docs[BOOKS]) == ids
    assert docs[BOOKS][min(ids, key=int)]["pages"] == 1


def test_one_update_moving_11000_rows_into_a_joined_publication(server, sql, clean, truncate_after):
    author = make_author(sql, "before@example.com")
    make_books(sql, author, 11_000)
    client = RawDDP(server.port)
    try:
        assert subscribe(client, "BooksByAuthorEmail", "after@example.com") == {}
        fence(client)  # the inserts are dispatched: the rows now move in with the one UPDATE
        sql("UPDATE bookstore_author SET email = 'after@example.com' WHERE id = %s", [author])
        added = {}
        while sum(len(d) for d in added.values()) < 11_001:
            msg = client.recv()
            assert msg["msg"] == "added", msg
            added.setdefault(msg["collection"], set()).add(msg["id"])
    finally:
        client.close()
    assert len(added[BOOKS]) == 11_000 and added["bookstore.author"] == {str(author)}


def test_login_re_running_subscriptions_sends_a_large_difference(server, sql, clean, truncate_after):
    with DDPClient(server.ws_url) as ddp:
        ddp.connect()
        user_id = ddp.call("login_as", "many-notes")
    sql("INSERT INTO testapp_note (owner_id, text, shared) SELECT %s, 'note ' || i, false "
        "FROM generate_series(1, 12000) i", [user_id])
    client = RawDDP(server.port)
    try:
        assert subscribe(client, "MyNotes") == {}  # anonymous: shared notes only
        client.send({"msg": "method", "method": "login_as", "id": "m", "params": ["many-notes"]})
        added, replies = set(), []
        while len(replies) < 2:
            msg = client.recv()
            if msg["msg"] == "added":
                added.add(msg["id"])
            else:
                replies.append(msg["msg"])
    finally:
        client.close()
    assert len(added) == 12_000 and sorted(replies) == ["result", "updated"]


def apply_strictly(view, msg):
    """Apply a data message to a client's ``{(collection, id): fields}`` as a DDP client
    must be able to: ``added`` only for a document it lacks, the rest for one it has."""
    key = (msg["collection"], msg["id"])
    if msg["msg"] == "added":
        assert key not in view, msg
        view[key] = dict(msg.get("fields", {}))
    elif msg["msg"] == "changed":
        assert key in view, msg
        view[key].update(msg.get("fields", {}))
        for name in msg.get("cleared", ()):
            view[key].pop(name, None)
    else:
        assert msg["msg"] == "removed" and key in view, msg
        del view[key]


def test_a_welcome_merges_with_what_the_session_holds_and_an_unsub_takes_back_what_it_sent(
        server, sql, clean, truncate_after):
    """A welcome of 6,000 books and 2 authors (many chunks of the mergebox, many queue items) into a
    session that holds half of them through another subscription: only the other half is
    added; the client ends with the table.  A subscription ended as soon as it is made
    removes exactly what it added, nothing it did not."""
    first, second = make_author(sql, "a@example.com"), make_author(sql, "b@example.com")
    make_books(sql, first, 3000)
    make_books(sql, second, 3000)
    table = {str(book_id): (title, author) for book_id, title, author
             in sql("SELECT id, title, author_id FROM bookstore_book", fetch=True)}
    client = RawDDP(server.port)
    try:
        view = {(c, i): f for c, docs in subscribe(client, "BooksByAuthorEmail", "a@example.com").items()
                for i, f in docs.items()}
        assert len(view) == 3001
        client.send({"msg": "sub", "id": "all", "name": "AllBooks", "params": []})
        added = 0
        while (msg := client.recv())["msg"] != "ready":
            assert msg["msg"] == "added", msg  # the held half: same fields, nothing to send
            apply_strictly(view, msg)
            added += 1
        assert added == 3001  # the other author's books, and that author
        books = {i: (f["title"], int(f["author_id"])) for (c, i), f in view.items() if c == BOOKS}
        assert books == table
    finally:
        client.close()
    client = RawDDP(server.port)
    try:
        view = {}
        client.send({"msg": "sub", "id": "gone", "name": "AllBooks", "params": []})
        client.send({"msg": "unsub", "id": "gone"})
        while (msg := client.recv())["msg"] != "nosub":
            if msg["msg"] != "ready":
                apply_strictly(view, msg)
        assert view == {}
    finally:
        client.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_changes_during_a_paced_initial_subscription_follow_it_in_order(server, sql, clean, truncate_after,
                                                                        seed):
    """The documents stream at the client's pace (20 MB: more than the socket buffers and the
    high-water mark hold) while rows are updated, deleted and inserted: the client ends with
    exactly the table (the snapshot it streams from is not changed under it; the changes
    held back meanwhile, megabytes of them, do not stall it)."""
    rng = random.Random(seed)
    author = make_author(sql, f"paced{seed}@example.com")
    make_books(sql, author, 5000, blurb="repeat('b', 4000)")
    ids = [row[0] for row in sql("SELECT id FROM bookstore_book", fetch=True)]
    client = RawDDP(server.port, rcvbuf=4096, timeout=30)
    try:
        client.send({"msg": "sub", "id": "s", "name": "AllBooks", "params": []})
        time.sleep(0.5)  # not reading: the server holds the rest of the documents back
        for _ in range(30):
            sample = rng.sample(ids, 50)
            op = rng.choice(["update", "update", "delete", "insert"])
            if op == "update":
                sql("UPDATE bookstore_book SET pages = pages + 1000, title = md5(random()::text), "
                    "blurb = repeat(md5(random()::text), 125) WHERE id = ANY(%s)", [sample])
            elif op == "delete":
                sql("DELETE FROM bookstore_book WHERE id = ANY(%s)", [sample])
            else:
                make_books(sql, author, 50)
        docs = {}
        ready = False
        while not ready:
            msg = client.recv()
            ready = apply(docs, msg)
        fence(client, lambda msg: apply(docs, msg))  # every change committed so far was sent before
    finally:
        client.close()
    expected = {str(i): (t, p, b) for i, t, p, b in sql("SELECT id, title, pages, blurb FROM bookstore_book",
                                                         fetch=True)}
    assert {i: (d["title"], d["pages"], d["blurb"]) for i, d in docs.get(BOOKS, {}).items()} == expected


def apply(docs, msg):
    """Apply a data message to ``{collection: {id: fields}}``; True for ``ready``."""
    kind = msg["msg"]
    if kind == "ready":
        return True
    collection = docs.setdefault(msg.get("collection"), {})
    if kind == "added":
        assert msg["id"] not in collection, msg
        collection[msg["id"]] = msg.get("fields", {})
    elif kind == "changed":
        collection[msg["id"]].update(msg.get("fields", {}))
        for name in msg.get("cleared", []):
            collection[msg["id"]].pop(name, None)
    elif kind == "removed":
        del collection[msg["id"]]
    else:
        raise AssertionError(msg)
    return False


# -- a client that does not read ------------------------------------------------------------

class Reader(threading.Thread):
    """A client that reads all the time, keeping the last fields of each document."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.client = RawDDP(port)
        self.docs = subscribe(self.client, "AllBooks")
        self.error = None

    def run(self):
        try:
            while True:
                msg = self.client.recv()
                if msg["msg"] == "changed":
                    self.docs[msg["collection"]][msg["id"]].update(msg.get("fields", {}))
        except OSError:
            pass  # closed by the test
        except Exception as exc:
            self.error = exc

    def wait_for(self, blurbs, timeout=60):
        deadline = time.monotonic() + timeout
        while {i: d.get("blurb") for i, d in self.docs[BOOKS].items()} != blurbs:
            assert self.error is None and time.monotonic() < deadline, self.error
            time.sleep(0.05)


def push_big_changes(sql, statements):
    """``statements`` UPDATEs, each giving every book a new 20 KiB blurb."""
    for _ in range(statements):
        sql("UPDATE bookstore_book SET blurb = repeat(md5(random()::text || id), 640)")


def blurbs(sql):
    return {str(i): b for i, b in sql("SELECT id, blurb FROM bookstore_book", fetch=True)}


def test_a_client_that_stops_reading_is_closed_at_the_byte_limit_and_its_memory_freed(
        start_server, sql, clean):
    live = start_server("--send-buffer-limit", "1M")
    author = make_author(sql, "big-docs@example.com")
    make_books(sql, author, 20, blurb="repeat('x', 20480)")
    reader = Reader(live.port)
    reader.start()
    stalled = RawDDP(live.port, rcvbuf=4096)
    try:
        assert len(subscribe(stalled, "AllBooks")[BOOKS]) == 20  # ... and it reads no more
        baseline = rss_kib(live.process.pid)
        peak = [baseline]
        sampling = threading.Event()

        def sample():
            while not sampling.is_set():
                peak[0] = max(peak[0], rss_kib(live.process.pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        push_big_changes(sql, 100)  # 2,000 changes of 20 KiB: 40 MB for each client
        wait_for_output(live, "send buffer limit exceeded")
        reader.wait_for(blurbs(sql))  # the reading client got everything
        sampling.set()
        sampler.join()
        after = rss_kib(live.process.pid)
        assert stalled.close_frame() == (1008, "send buffer limit exceeded")
    finally:
        stalled.close()
        reader.client.close()
    # The 40 MB meant for the stalled client were never held, and nothing stays behind.
    assert peak[0] - baseline < 24 * 1024, (baseline, peak[0], after)
    assert after - baseline < 12 * 1024, (baseline, peak[0], after)


def test_the_send_timeout_closes_a_client_that_reads_nothing(start_server, sql, clean):
    live = start_server("--send-timeout", "1")
    author = make_author(sql, "stall@example.com")
    make_books(sql, author, 20, blurb="repeat('x', 20480)")
    stalled = RawDDP(live.port, rcvbuf=4096)
    silent = RawDDP(live.port, rcvbuf=4096)
    try:
        subscribe(stalled, "AllBooks")
        subscribe(silent, "AllBooks")
        # 12 MB each: more than the socket buffers hold (up to 4 MB here), under the 64 MiB limit
        push_big_changes(sql, 30)
        wait_for_output(live, "send timeout")
        assert stalled.close_frame() == (1008, "send timeout")
        # One that does not even take its close frame is cut off after another timeout.
        wait_for_output(live, "the close frame could not be sent")
        with DDPClient(live.ws_url) as ddp:  # the server serves on
            ddp.connect()
            assert ddp.call("echo", 1) == [1]
    finally:
        stalled.close()
        silent.close()


# -- options -----------------------------------------------------------------------------------

@given(st.integers(min_value=0, max_value=1 << 40),
       st.sampled_from(["", "K", "M", "G", "k", "KiB", "MB", "gib"]))
def test_parse_size(number, unit):
    multiplier = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit[:1].lower()]
    assert parse_size(f"{number}{unit}") == number * multiplier


@pytest.mark.parametrize("bad", ["", "M", "1.5M", "-1", "12T", "64 megs"])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def test_serve_rejects_a_bad_send_buffer_limit():
    for value in ("lots", "1K"):
        result = subprocess.run([sys.executable, "-m", "ddpctl", "serve", *SERVER_ARGS, "--send-buffer-limit",
                                 value], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "--send-buffer-limit" in result.stderr


def test_serve_help_names_the_send_options():
    out = subprocess.run([sys.executable, "-m", "ddpctl", "serve", "--help"], capture_output=True, text=True,
                         timeout=60).stdout
    for text in ("--send-buffer-limit", "DDPCTL_SEND_BUFFER_LIMIT", "--send-timeout", "DDPCTL_SEND_TIMEOUT"):
        assert text in out
    assert "--send-queue-size" not in out


def test_the_removed_send_queue_size_is_ignored_with_a_warning(start_server):
    live = start_server("--send-queue-size", "100000")
    with DDPClient(live.ws_url) as ddp:
        ddp.connect()
        assert ddp.call("echo", "up") == ["up"]
    assert "--send-queue-size / DDPCTL_SEND_QUEUE_SIZE (a message count) is ignored" in live.output()
