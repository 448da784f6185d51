"""Idle WebSocket connections are read by an io watcher, not a greenlet each
(``DDPConnection.serve_watched``): bytes sent with the upgrade request, many quiet
connections woken one by one, and every way a client leaves (the socket is closed once)."""
from __future__ import annotations

import json
import os
import socket

import websocket
from conftest import eventually
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from ddpctl.testing import DDPClient

_MESSAGES = [
    {"msg": "connect", "version": "1", "support": ["1"]},
    {"msg": "method", "method": "echo", "id": "e", "params": ["over the upgrade"]},
    {"msg": "method", "method": "echo", "id": "f", "params": ["after it"]},
]


def _client_frame(payload: bytes) -> bytes:
    """A masked client text frame (RFC 6455 5.2), for payloads under 126 bytes."""
    mask = os.urandom(4)
    return bytes((0x81, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _exchange(port: int, split: int, chunk: int) -> list[dict]:
    """Send the upgrade request and the three DDP messages as one byte stream cut at
    ``split`` (the first part in one write: the server's HTTP parser reads past the head),
    the rest in writes of ``chunk`` bytes; the server's messages until the last result."""
    client = WSConnection(ConnectionType.CLIENT)
    data = client.send(Request(host=f"127.0.0.1:{port}", target="/websocket"))
    data += b"".join(_client_frame(json.dumps(m).encode()) for m in _MESSAGES)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data[:split])
        for start in range(split, len(data), chunk):
            sock.sendall(data[start:start + chunk])
        received: list[dict] = []
        accepted = False
        while not received or received[-1].get("id") != "f":
            got = sock.recv(65536)
            assert got, f"the server closed the connection after {received}"
            client.receive_data(got)
            for event in client.events():
                if isinstance(event, AcceptConnection):
                    accepted = True
                elif isinstance(event, TextMessage):
                    received.append(json.loads(event.data))
        assert accepted
        return received


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(split=st.integers(min_value=1, max_value=600), chunk=st.integers(min_value=1, max_value=64))
def test_messages_sent_with_the_upgrade_request_are_answered_in_order(server, split, chunk):
    received = _exchange(server.port, split, chunk)
    kinds = [m["msg"] for m in received if m["msg"] not in ("server_id", "updated")]
    assert kinds == ["connected", "result", "result"], received
    results = [m for m in received if m["msg"] == "result"]
    assert results == [{"msg": "result", "id": "e", "result": ["over the upgrade"]},
                       {"msg": "result", "id": "f", "result": ["after it"]}]


def _open_connection_fds(pid: int, port: int) -> int:
    """File descriptors of process ``pid`` that are sockets of a connection to its
    listening ``port``: in the TCP tables with that local port (any state but LISTEN), or in
    no socket table at all (a TCP socket in state CLOSE, shut down but never closed).  Its
    other sockets (the database lanes, opened lazily; the listener) do not count."""
    inodes = set()
    fds = f"/proc/{pid}/fd"
    for fd in os.listdir(fds):
        try:
            link = os.readlink(f"{fds}/{fd}")
        except FileNotFoundError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ours, known = set(), set()
    for table in ("tcp", "tcp6", "udp", "udp6", "unix", "netlink"):
        with open(f"/proc/net/{table}") as lines:
            header = next(lines).split()
            column = header.index("Inode") if "Inode" in header else 9
            for line in lines:
                fields = line.split()
                if len(fields) <= column:
                    continue
                inode = fields[column] if table != "netlink" else fields[-1]
                known.add(inode)
                if table.startswith("tcp") and int(fields[1].rsplit(":", 1)[1], 16) == port \
                        and fields[3] != "0A":
                    ours.add(inode)
    return len(inodes & ours) + len(inodes - known)


def _server_side_sockets(port: int) -> int:
    """TCP connections to ``port`` whose server side is still open: ESTABLISHED, or
    CLOSE_WAIT (the client left and the server has not closed its socket)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                local, state = line.split()[1], line.split()[3]
                if int(local.rsplit(":", 1)[1], 16) == port and state in ("01", "08"):
                    count += 1
    return count


def test_quiet_connections_wake_in_any_order_and_every_way_of_leaving_closes_the_socket(start_server):
    live = start_server("--db-connections", "2")
    pid = live.process.pid
    with DDPClient(live.ws_url) as first:
        first.connect()
        assert first.call("echo", "first") == ["first"]  # the database lanes are open
    eventually(lambda: _server_side_sockets(live.port) == 0)
    clients = [DDPClient(live.ws_url) for _ in range(120)]
    for client in clients:
        client.connect()
    assert _server_side_sockets(live.port) == len(clients)
    for n, client in enumerate(reversed(clients)):  # each wakes its own watcher
        assert client.call("echo", n) == [n]
    for n, client in enumerate(clients):
        if n % 3 == 0:
            client.close()  # a close frame
        elif n % 3 == 1:
            client.ws.sock.shutdown(socket.SHUT_RDWR)  # no close frame: EOF
            client.ws.sock.close()
        else:
            client.send_raw("x" * 10)  # not DDP: answered with an error, then it leaves
            client.ws.close(status=websocket.STATUS_GOING_AWAY)
    eventually(lambda: _server_side_sockets(live.port) == 0, timeout=30)
    # Every connection's socket is closed, not only shut down.
    eventually(lambda: _open_connection_fds(pid, live.port) == 0, timeout=30)
    with DDPClient(live.ws_url) as last:
        last.connect()
        assert last.call("echo", "still") == ["still"]
