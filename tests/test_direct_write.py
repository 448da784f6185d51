"""Writes without a writer greenlet: a connection whose writer is not at work has its data
written by the direct-write greenlet with a non-blocking ``send``; what the socket does not
take is finished by the writer before anything else.  Over a real socket whose buffers are
small (so writes are cut anywhere, mid-frame included), whatever the sizes, the mix with
blocking writes, heartbeats, ticks and compression, the client reads every message once, in
order, in whole frames, then the close frame; nothing stays counted as buffered."""
import socket
import time
import zlib
from types import SimpleNamespace

import gevent
import gevent.socket
from hypothesis import given, settings
from hypothesis import strategies as st
from test_websocket_deflate import parse_frames

from ddpctl.config import ServeConfig
from ddpctl.livedata.publish import PreparedMessage
from ddpctl.server import connection as connection_module
from ddpctl.server.connection import DDPConnection, RawTransport, SockJSTransport
from ddpctl.server.deflate import DeflateParams
from ddpctl.server.websocket import WebSocket, text_frame


def _pair(buffer: int):
    server, client = gevent.socket.socketpair()
    for sock in (server, client):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    return server, client


def _websocket(sock, deflate: bool) -> WebSocket:
    return WebSocket(sock.recv, sock.send, sock, 1 << 20, DeflateParams() if deflate else None)


class SlowClient:
    """Reads the other end in small pieces, yielding between them, until EOF."""

    def __init__(self, sock, chunk: int) -> None:
        self.sock, self.chunk, self.data = sock, chunk, bytearray()
        self.greenlet = gevent.spawn(self._read)

    def _read(self) -> None:
        while True:
            piece = self.sock.recv(self.chunk)
            if not piece:
                return
            self.data += piece
            gevent.sleep(0)

    def frames(self) -> list[tuple[int, bytes]]:
        """(opcode, payload inflated) of each frame; every byte belongs to a whole frame."""
        def inflate(payload: bytes) -> bytes:
            return zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")

        return [(opcode, inflate(payload) if rsv1 else payload)
                for rsv1, opcode, payload in parse_frames(bytes(self.data))]


texts = st.lists(st.one_of(st.text(max_size=40),
                           st.integers(5000, 40000).map(lambda n: "x" * n),
                           st.binary(min_size=100, max_size=20000).map(bytes.hex)),
                 min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["nowait", "send", "yield"]), texts), max_size=12),
       st.booleans(), st.sampled_from([1, 512, 65536]))
def test_websocket_nowait_writes_keep_frames_whole_and_in_order(steps, deflate, chunk):
    server, client = _pair(4096)
    ws = _websocket(server, deflate)
    reader = SlowClient(client, chunk)
    sent = []
    try:
        for kind, batch in steps:
            sent.extend(batch)
            if kind == "yield":
                ws.send_many(batch)
                gevent.sleep(0)
            elif kind == "send" or ws.send_many_nowait(batch) is None:
                ws.send_many(batch)  # what the writer does when nowait was not possible
        ws.close(1000, "done")  # after the rest of a cut frame, never inside it
        reader.greenlet.join(timeout=30)
        frames = reader.frames()
    finally:
        reader.greenlet.kill()
        server.close()
        client.close()
    assert [payload.decode() for opcode, payload in frames[:-1]] == sent
    assert all(opcode == 1 for opcode, _ in frames[:-1]) and frames[-1][0] == 8


def test_a_tls_socket_or_another_send_is_never_written_around():
    server, client = _pair(4096)
    try:
        wrapped = WebSocket(server.recv, lambda data: server.send(data), server, 1024)
        assert wrapped.send_many_nowait(["a"]) is None
        assert _websocket(server, False).send_many_nowait(["a"]) == 0
        assert client.recv(16) == b"\x81\x01a"
    finally:
        server.close()
        client.close()


SIZES = st.one_of(st.integers(1, 200), st.integers(5000, 30000))  # small, or over the socket's buffers
# Steps on a connection: ("push", sizes) queues messages from a fan-out greenlet,
# ("own", sizes) from the connection's processor (paced by the high-water mark),
# ("fanout", sizes) an observer's batch (``sub_prepared_all``: written at once when nothing
# is queued), ("yield",), ("heartbeat",) a SockJS heartbeat frame, ("tick",) the writer's idle end.
CONNECTION_STEPS = st.lists(st.one_of(
    st.tuples(st.just("push"), st.lists(SIZES, min_size=1, max_size=4)),
    st.tuples(st.just("fanout"), st.lists(SIZES, min_size=1, max_size=4)),
    st.tuples(st.just("own"), st.lists(SIZES, min_size=1, max_size=4)),
    st.tuples(st.just("yield")), st.tuples(st.just("heartbeat")), st.tuples(st.just("tick")),
), max_size=20)


@settings(max_examples=80, deadline=None)
@given(CONNECTION_STEPS, st.booleans(), st.booleans(), st.sampled_from([1, 700, 65536]),
       st.sampled_from([1, 2, 16]))
def test_connection_delivers_everything_once_in_order_then_closes(steps, deflate, sockjs, chunk,
                                                                   write_now_at):
    server, client = _pair(4096)
    ws = _websocket(server, deflate)
    transport = SockJSTransport(ws) if sockjs else RawTransport(ws)
    config = ServeConfig()
    conn = DDPConnection(SimpleNamespace(config=config, connections=set()), transport, {})
    conn.session.id, conn.session.version, conn.handle.id = "s", "1", "s"
    conn.session.subscriptions["1"] = "pub"
    reader = SlowClient(client, chunk)
    # The direct-write greenlet's list written at once by whoever queues the n-th connection.
    direct_writes = connection_module._direct_writes
    saved_write_now_at, direct_writes.WRITE_NOW_AT = direct_writes.WRITE_NOW_AT, write_now_at
    sent: list[str] = []
    heartbeats = 0

    def texts(sizes):
        for size in sizes:
            sent.append(f'{{"msg":"changed","n":{len(sent)},"s":"{"y" * size}"}}')
            yield sent[-1]

    try:
        for step in steps:
            if step[0] == "push":
                for text in texts(step[1]):
                    conn._queue_text(text)
            elif step[0] == "fanout":
                batch = []
                for size in step[1]:
                    batch.append(PreparedMessage("added", "c", f"d{len(sent)}", {"s": "y" * size}))
                    sent.append(batch[-1].text)
                conn.sub_prepared_all("1", batch)
            elif step[0] == "own":
                batch = list(texts(step[1]))
                conn._processor = gevent.spawn(lambda b=batch: [conn._queue_text(t) for t in b])
                conn._processor.join()
                conn._processor = None
            elif step[0] == "yield":
                gevent.sleep(0)
            elif step[0] == "heartbeat":
                if sockjs:
                    heartbeats += 1
                conn._push(connection_module._TRANSPORT_HEARTBEAT, 0)
            else:
                conn.tick(time.monotonic() + connection_module._WRITER_LINGER)
            # Flow control counts what the socket has not taken yet (a cut frame's rest too).
            assert conn._buffered >= (len(ws._tail) if ws._tail is not None else 0)
        conn.close(1000, "done")
        reader.greenlet.join(timeout=30)
        deadline = time.monotonic() + 10
        while conn._writer is not None and time.monotonic() < deadline:
            gevent.sleep(0.01)
        frames = reader.frames()
    finally:
        direct_writes.WRITE_NOW_AT = saved_write_now_at
        reader.greenlet.kill()
        if conn._writer is not None:
            conn._writer.kill()
        server.close()
        client.close()
    assert frames[-1][0] == 8  # the close frame, last
    data = [payload.decode() for opcode, payload in frames[:-1]]
    if sockjs:
        import json
        assert data.count("h") == heartbeats
        assert data[-1] == 'c[1000,"done"]'
        received = [text for frame in data[:-1] if frame != "h" for text in json.loads(frame[1:])]
    else:
        received = data
    assert received == sent
    assert conn._buffered == 0 and not conn._outbox


def _subscribed(transport, name: str = "s") -> DDPConnection:
    """A connected DDP connection over ``transport`` with subscription ``1`` (``pub``)."""
    conn = DDPConnection(SimpleNamespace(config=ServeConfig(), connections=set()), transport, {})
    conn.session.id, conn.session.version, conn.handle.id = "s", "1", name
    conn.session.subscriptions["1"] = "pub"
    return conn


# Steps over several connections: (connection, "push" | "fanout", sizes) or ("yield",).
MANY_STEPS = st.lists(st.one_of(
    st.tuples(st.integers(0, 2), st.sampled_from(["push", "fanout"]),
              st.lists(SIZES, min_size=1, max_size=3)),
    st.tuples(st.just("yield")),
), max_size=24)


@settings(max_examples=60, deadline=None)
@given(MANY_STEPS, st.booleans(), st.sampled_from([1, 700, 65536]), st.sampled_from([1, 2, 3]))
def test_connections_written_inside_each_others_sends_each_get_everything_in_order(steps, deflate, chunk,
                                                                                   write_now_at):
    """The direct-write list is written by whoever queues its n-th connection: inside
    another connection's ``_push`` or observer batch, one connection's queue is written
    while the caller is busy with another's.  Each client still reads its own messages
    once, in order, in whole frames, then its close frame."""
    pairs, conns, readers = [], [], []
    sent: list[list[str]] = [[], [], []]
    direct_writes = connection_module._direct_writes
    saved_write_now_at, direct_writes.WRITE_NOW_AT = direct_writes.WRITE_NOW_AT, write_now_at
    try:
        for n in range(3):
            server, client = _pair(4096)
            pairs.append((server, client))
            conns.append(_subscribed(RawTransport(_websocket(server, deflate)), f"s{n}"))
            readers.append(SlowClient(client, chunk))
        for step in steps:
            if step[0] == "yield":
                gevent.sleep(0)
                continue
            n, kind, sizes = step
            texts = sent[n]
            if kind == "push":
                for size in sizes:
                    texts.append(f'{{"msg":"changed","n":{len(texts)},"s":"{"y" * size}"}}')
                    conns[n]._queue_text(texts[-1])
            else:
                batch = []
                for size in sizes:
                    batch.append(PreparedMessage("added", "c", f"d{len(texts)}", {"s": "y" * size}))
                    texts.append(batch[-1].text)
                conns[n].sub_prepared_all("1", batch)
        for conn in conns:
            conn.close(1000, "done")
        for reader in readers:
            reader.greenlet.join(timeout=30)
        deadline = time.monotonic() + 10
        while any(conn._writer is not None for conn in conns) and time.monotonic() < deadline:
            gevent.sleep(0.01)
        received = [reader.frames() for reader in readers]
    finally:
        direct_writes.WRITE_NOW_AT = saved_write_now_at
        for reader in readers:
            reader.greenlet.kill()
        for conn in conns:
            if conn._writer is not None:
                conn._writer.kill()
        for server, client in pairs:
            server.close()
            client.close()
    for n, frames in enumerate(received):
        assert frames[-1][0] == 8  # the close frame, last
        assert [payload.decode() for _opcode, payload in frames[:-1]] == sent[n]
        assert conns[n]._buffered == 0 and not conns[n]._outbox


def test_a_write_that_fails_drops_its_connection_and_the_fan_out_goes_on(caplog):
    """An error other than the peer being gone, in a write made from an observer's fan-out
    loop, drops that connection (logged) and reaches neither the loop nor the next client."""
    pairs, conns = [], []
    try:
        for n in range(2):
            server, client = _pair(65536)
            pairs.append((server, client))
            conns.append(_subscribed(RawTransport(_websocket(server, False)), f"s{n}"))

        def broken(texts):
            raise RuntimeError("a framing bug")

        conns[0]._send_nowait = broken
        message = PreparedMessage("added", "c", "d1", {"s": "y"})
        for conn in conns:  # as Observer.apply does
            conn.sub_prepared_all("1", [message])
        assert "a write failed; dropping the connection" in caplog.text
        assert conns[0].transport.closed and conns[0]._buffered == 0
        assert not conns[1].transport.closed
        pairs[1][1].settimeout(5)
        assert pairs[1][1].recv(4096) == text_frame(message.text.encode())
    finally:
        for server, client in pairs:
            server.close()
            client.close()
