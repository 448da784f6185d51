"""DDP load generator for the benchmark: many gevent WebSocket clients in one process.

    python bench/loadgen.py HOST PORT CLIENTS [PUBLICATION]

Each client connects (raw WebSocket), subscribes to PUBLICATION (if given) and counts
every DDP message.  ``changed``/``added`` messages whose ``title`` is a float are taken as
the writer's commit time, giving commit-to-client latency; a title older than one the
client already received (of any document) counts as an order inversion, since one writer
thread commits in title order.  Prints ``READY <seconds>``
once every client has its ``ready`` (or is connected, without a publication), then waits
for ``STOP <final title>`` on stdin, waits until every client has seen that title, and
prints one JSON line of results.
"""
from gevent import monkey

monkey.patch_all()

import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402


class Client:
    def __init__(self, host, port, publication):
        self.host, self.port, self.publication = host, port, publication
        self.messages = 0
        self.latencies = []
        self.last_title = None
        self.newest = 0.0  # the newest commit time received, over every document
        self.inversions = 0
        self.ready = Event()
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
        while True:
            while len(self.buffer) < 2 or len(self.buffer) < self._frame_len():
                data = self.sock.recv(262144)
                if not data:
                    return
                self.buffer += data
            length = self._frame_len()
            header = self.buffer[:length - self._payload_len()]
            payload = self.buffer[len(header):length]
            self.buffer = self.buffer[length:]
            if header[0] & 0x0F == 0x1:
                yield payload

    def _payload_len(self):
        n = self.buffer[1] & 0x7F
        if n == 126:
            return struct.unpack("!H", self.buffer[2:4])[0] if len(self.buffer) >= 4 else 1 << 30
        if n == 127:
            return struct.unpack("!Q", self.buffer[2:10])[0] if len(self.buffer) >= 10 else 1 << 30
        return n

    def _frame_len(self):
        n = self.buffer[1] & 0x7F
        head = 2 + (2 if n == 126 else 8 if n == 127 else 0)
        return head + self._payload_len()

    def run(self):
        self.sock = socket.create_connection((self.host, self.port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /websocket HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        self.buffer = self.buffer.split(b"\r\n\r\n", 1)[1]
        self._send('{"msg":"connect","version":"1","support":["1"]}')
        if self.publication:
            self._send(json.dumps({"msg": "sub", "id": "s", "name": self.publication, "params": []}))
        for payload in self._frames():
            now = time.time()
            self.messages += 1
            msg = json.loads(payload)
            kind = msg.get("msg")
            if kind == "ping":
                self._send('{"msg":"pong"}')
            elif kind == "connected" and not self.publication:
                self.ready.set()
            elif kind == "ready":
                self.ready.set()
            elif kind in ("added", "changed"):
                title = msg.get("fields", {}).get("title")
                if title is not None:
                    self.last_title = title
                    try:
                        committed = float(title)
                    except ValueError:
                        continue  # not a timestamp title (initial documents)
                    self.latencies.append(now - committed)
                    if committed < self.newest:
                        self.inversions += 1
                    else:
                        self.newest = committed


def main():
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    publication = sys.argv[4] if len(sys.argv) > 4 else None
    clients = [Client(host, port, publication) for _ in range(count)]
    started = time.monotonic()
    greenlets = []
    for i, c in enumerate(clients):
        greenlets.append(gevent.spawn(c.run))
        if i % 200 == 199:
            gevent.sleep(0.05)  # do not overflow the server's accept backlog
    for c in clients:
        c.ready.wait()
    print(f"READY {time.monotonic() - started:.3f}", flush=True)
    for c in clients:  # measurement starts now
        c.messages = 0
        c.latencies = []
        c.inversions = 0
    line = gevent.get_hub().threadpool.apply(sys.stdin.readline).split()
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
