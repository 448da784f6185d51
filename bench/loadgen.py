"""DDP load generator for the benchmark: many gevent WebSocket clients in one process.

    python bench/loadgen.py HOST PORT CLIENTS [PUBLICATION] [--params JSON] [--events]
                            [--ready-timeout SECONDS] [--connect-first SLOTS] [--cpu]

Each client connects (raw WebSocket), subscribes to PUBLICATION (if given; with the
parameters ``--params``, a JSON list in which ``{i}`` inside strings becomes the client's
number, 0 to CLIENTS - 1) and counts every DDP message.  ``changed``/``added`` messages
whose ``title`` is a float are taken as the writer's commit time, giving commit-to-client
latency; a title older than one the client already received (of any document) counts as
an order inversion, since one writer thread commits in title order.  Prints ``READY
<seconds> <JSON {"p50": s, "p90": s, "p99": s}>`` once every client has its ``ready`` (or
is connected, without a publication; the quantiles are of the clients' own ready times;
with ``--cpu`` also ``"cpu"``: this process's CPU seconds from the first connect on),
or ``NOTREADY <seconds> <clients not ready> <JSON {reason: clients}>`` after
``--ready-timeout`` or once every client not ready has lost its connection.  With
``--connect-first``, every client first connects (at most SLOTS of them between TCP connect
and DDP ``connected`` at a time, so a busy server's accept queue does not overflow) and
``CONNECTED <seconds> <clients not connected> <JSON reasons>`` is printed; on a line
``SUBSCRIBE`` from stdin all send ``sub`` at once and READY's seconds count from then.  Then reads commands on stdin:

``STOP <final title>``
    waits (at most 60 s) until every client has seen that title, prints one JSON line of
    results and exits.
``COLLECT <json>``
    (with ``--events``) ``{"expect": [[client, collection, id, field, value], ...],
    "cap": seconds, "grace": seconds}``: waits until every expectation holds (the client's
    copy of the document has ``field == value``; ``value`` null: the document is gone, or
    the client's connection has ended) or ``cap`` seconds pass, prints ``REACHED <seconds> <expectations not met>``, waits
    ``grace`` seconds more (for messages that should not come), prints one JSON line
    ``{"events": [[client, msg, collection, id, fields or null, receive time], ...],
    "closed": [numbers of the clients whose connection ended], "errors": {reason: clients}}`` of the
    ``added``/``changed``/``removed`` messages received since ``READY`` or the last
    ``COLLECT`` (receive time: ``time.time()``), and forgets them.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import base64  # noqa: E402
import collections  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import orjson  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.lock import BoundedSemaphore  # noqa: E402

MAX_EVENTS = 2_000_000  # kept between two COLLECTs, over all clients (a runaway broadcast)


class Client:
    def __init__(self, host, port, publication, params=(), events=None):
        self.host, self.port, self.publication, self.params = host, port, publication, list(params)
        self.events = events  # shared list of [client, msg, collection, id, fields, time], or None
        self.number = 0
        self.docs = {}  # (collection, id) -> fields, the client's copy (only with events)
        self.messages = 0
        self.latencies = []
        self.last_title = None
        self.newest = 0.0  # the newest commit time received, over every document
        self.inversions = 0
        self.ready = Event()
        self.connected = Event()
        self.ready_at = None  # time.monotonic() of ``ready``
        self.error = None  # why run() ended early
        self.closed = False  # run() returned: the connection is gone
        self.sock = None
        self.buffer = b""

    def _send(self, text):
        payload = text.encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _frames(self):
        # An offset into what was received, not a copy of the rest per frame: a welcome of
        # 10,000 documents arrives in 256 KiB reads of ~1,700 frames each.
        buf, pos = self.buffer, 0
        while True:
            header = _frame_header(buf, pos)
            while header is None or len(buf) - pos < header[0] + header[1]:
                data = self.sock.recv(262144)
                if not data:
                    return
                buf, pos = buf[pos:] + data, 0
                header = _frame_header(buf, pos)
            head, length = header
            opcode = buf[pos] & 0x0F
            payload = buf[pos + head:pos + head + length]
            pos += head + length
            if opcode == 0x1:
                yield payload
            elif opcode == 0x8 and self.error is None:  # the server closes: say why
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                self.error = f"closed by the server: {code} {payload[2:].decode(errors='replace')}".strip()

    def _track(self, msg, kind, now):
        key = (msg.get("collection"), msg.get("id"))
        fields = msg.get("fields")
        if kind == "added":
            self.docs[key] = dict(fields or {})
        elif kind == "changed":
            doc = self.docs.setdefault(key, {})
            doc.update(fields or {})
            for name in msg.get("cleared") or ():
                doc.pop(name, None)
        else:
            self.docs.pop(key, None)
        if len(self.events) < MAX_EVENTS:
            self.events.append([self.number, kind, key[0], key[1], fields, now])

    def run(self, gate=None, go=None):
        """Connect, subscribe and read until the connection ends.  With ``gate`` (a
        semaphore) and ``go`` (an Event): hold a slot of ``gate`` from TCP connect to DDP
        ``connected``, then wait for ``go`` before subscribing."""
        try:
            self._run(gate, go)
        except Exception as error:  # reported in NOTREADY and the results, not fatal to the others
            self.error = f"{type(error).__name__}: {error}"
        finally:
            self.closed = True

    def _run(self, gate, go):
        frames = None
        with gate if gate is not None else contextlib.nullcontext():
            self.sock = socket.create_connection((self.host, self.port))
            key = base64.b64encode(os.urandom(16)).decode()
            self.sock.sendall((f"GET /websocket HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                               ).encode())
            while b"\r\n\r\n" not in self.buffer:
                data = self.sock.recv(4096)
                if not data:
                    raise ConnectionError("closed during the WebSocket handshake")
                self.buffer += data
            self.buffer = self.buffer.split(b"\r\n\r\n", 1)[1]
            self._send('{"msg":"connect","version":"1","support":["1"]}')
            if go is not None:
                frames = self._frames()
                for payload in frames:
                    if self._handle(payload):
                        break
                else:
                    raise ConnectionError("closed before connected")
        self.connected.set()
        if go is not None:
            go.wait()
        if self.publication:
            self._send(json.dumps({"msg": "sub", "id": "s", "name": self.publication, "params": self.params}))
        for payload in frames or self._frames():
            self._handle(payload)

    def _handle(self, payload):
        """Count and track one message; True if it was ``connected``."""
        now = time.time()
        self.messages += 1
        msg = orjson.loads(payload)  # about 3x faster than json.loads: the client is not what is measured
        kind = msg.get("msg")
        if kind == "ping":
            self._send('{"msg":"pong"}')
        elif kind == "connected" and not self.publication:
            self.ready.set()
        elif kind == "ready":
            self.ready_at = time.monotonic()
            self.ready.set()
        if self.events is not None and kind in ("added", "changed", "removed"):
            self._track(msg, kind, now)
        if kind in ("added", "changed"):
            title = msg.get("fields", {}).get("title")
            if title is not None:
                self.last_title = title
                try:
                    committed = float(title)
                except ValueError:
                    return False  # not a timestamp title (initial documents)
                self.latencies.append(now - committed)
                if committed < self.newest:
                    self.inversions += 1
                else:
                    self.newest = committed
        return kind == "connected"


def _frame_header(buf, pos):
    """``(header bytes, payload bytes)`` of the (unmasked) frame at ``pos``, or None if its
    header is not all there yet."""
    available = len(buf) - pos
    if available < 2:
        return None
    n = buf[pos + 1] & 0x7F
    if n == 126:
        return (4, struct.unpack_from("!H", buf, pos + 2)[0]) if available >= 4 else None
    if n == 127:
        return (10, struct.unpack_from("!Q", buf, pos + 2)[0]) if available >= 10 else None
    return 2, n


def substitute(value, number):
    """``value`` (parsed JSON) with ``{i}`` in its strings replaced by ``number``."""
    if isinstance(value, str):
        return value.replace("{i}", str(number))
    if isinstance(value, list):
        return [substitute(v, number) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, number) for k, v in value.items()}
    return value


def wait_all(clients, event, deadline):
    """Wait until every client that is still connected has ``event`` set, or ``deadline``
    (time.monotonic()); returns how many clients lack it."""
    def lacking():
        return [c for c in clients if not getattr(c, event).is_set()]

    while any(not c.closed for c in lacking()) and time.monotonic() < deadline:
        gevent.sleep(0.05)
    return len(lacking())


def failures(clients, event):
    """JSON: {reason: clients} for the clients without ``event`` (still waiting, or why they
    ended)."""
    reasons = collections.Counter((c.error or ("closed" if c.closed else "waiting"))[:200]
                                  for c in clients if not getattr(c, event).is_set())
    return json.dumps(dict(reasons.most_common(5)))


def collect(clients, events, request):
    """The COLLECT command (see the module docstring)."""
    expect = [(clients[c], (coll, doc), field, value) for c, coll, doc, field, value in request["expect"]]
    started = time.monotonic()
    deadline = started + request.get("cap", 60)

    def holds(client, key, field, value):
        if client.closed:
            return True  # will not change any more: the benchmark counts it missing
        return key not in client.docs if value is None else client.docs.get(key, {}).get(field) == value

    def unmet():
        return sum(1 for e in expect if not holds(*e))

    missing = unmet()
    while missing and time.monotonic() < deadline:
        gevent.sleep(0.05)
        missing = unmet()
    print(f"REACHED {time.monotonic() - started:.3f} {missing}", flush=True)
    gevent.sleep(request.get("grace", 1.0))
    batch = events[:]
    del events[:]
    print(json.dumps({"events": batch, "truncated": len(batch) >= MAX_EVENTS,
                      "closed": [c.number for c in clients if c.closed],
                      "errors": dict(collections.Counter((c.error or "closed")[:200]
                                                         for c in clients if c.closed).most_common(5))}),
          flush=True)


def main():
    parser = argparse.ArgumentParser(description="DDP load generator (see the module docstring)")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("clients", type=int)
    parser.add_argument("publication", nargs="?")
    parser.add_argument("--params", default="[]", help="JSON list of subscription parameters; {i}: client number")
    parser.add_argument("--events", action="store_true", help="record messages for COLLECT")
    parser.add_argument("--ready-timeout", type=float, default=None)
    parser.add_argument("--cpu", action="store_true",
                        help='READY\'s JSON also gives "cpu": this process\'s CPU seconds from the first '
                             'connect to READY (its start-up left out)')
    parser.add_argument("--connect-first", type=int, default=0, metavar="SLOTS",
                        help="connect every client first, SLOTS handshakes at a time, then subscribe all at once")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < args.clients + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard == resource.RLIM_INFINITY
                                                    else min(hard, max(args.clients + 100, soft)), hard))
    params = json.loads(args.params)
    events = [] if args.events else None
    clients = [Client(args.host, args.port, args.publication, substitute(params, i), events)
               for i in range(args.clients)]
    for i, c in enumerate(clients):
        c.number = i
    count = len(clients)
    gate = BoundedSemaphore(args.connect_first) if args.connect_first else None
    go = Event() if args.connect_first else None
    started = time.monotonic()
    cpu_started = time.process_time()
    greenlets = []
    for i, c in enumerate(clients):
        greenlets.append(gevent.spawn(c.run, gate, go))
        if i % 200 == 199:
            gevent.sleep(0.05)  # do not overflow the server's accept backlog
    timeout = math.inf if args.ready_timeout is None else args.ready_timeout
    if go is not None:
        not_connected = wait_all(clients, "connected", started + timeout)
        print(f"CONNECTED {time.monotonic() - started:.3f} {not_connected} {failures(clients, 'connected')}",
              flush=True)
        gevent.get_hub().threadpool.apply(sys.stdin.readline)  # SUBSCRIBE
        started = time.monotonic()
        go.set()
    not_ready = wait_all(clients, "ready", started + timeout)
    if not_ready:
        print(f"NOTREADY {time.monotonic() - started:.3f} {not_ready} {failures(clients, 'ready')}", flush=True)
    else:
        spread = sorted(c.ready_at - started for c in clients if c.ready_at is not None)
        quantiles = {f"p{q}": round(spread[min(len(spread) - 1, len(spread) * q // 100)], 3)
                     for q in (50, 90, 99)} if spread else {}
        if args.cpu:
            quantiles["cpu"] = round(time.process_time() - cpu_started, 4)
        print(f"READY {time.monotonic() - started:.3f} {json.dumps(quantiles)}", flush=True)
    for c in clients:  # measurement starts now
        c.messages = 0
        c.latencies = []
        c.inversions = 0
    if events is not None:
        del events[:]
    while True:
        line = gevent.get_hub().threadpool.apply(sys.stdin.readline)
        if not line:
            os._exit(0)  # the benchmark went away
        command, _, rest = line.strip().partition(" ")
        if command == "COLLECT":
            collect(clients, events, json.loads(rest))
        elif command == "STOP":
            break
        else:
            print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)
    line = line.split()
    measure_end = time.monotonic()
    final = line[1] if len(line) > 1 else None
    deadline = time.monotonic() + 60
    while final and time.monotonic() < deadline and any(c.last_title != final for c in clients):
        gevent.sleep(0.05)
    latencies = sorted(x for c in clients for x in c.latencies)
    print(json.dumps({
        "messages": sum(c.messages for c in clients),
        "complete": sum(1 for c in clients if final is None or c.last_title == final),
        "clients": count,
        "inversions": sum(c.inversions for c in clients),
        "latencies": latencies[:: max(1, len(latencies) // 20000)],
        "drain_seconds": time.monotonic() - measure_end,
    }), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
