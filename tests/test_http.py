"""The HTTP/1.1 layer (ddpctl.server.http) against a real ``ddpctl serve``, over raw sockets.

Smuggling shapes are refused with a closed connection; half-open requests are closed after
the header timeout while new clients are served; slow readers of a large file keep the
server's memory bounded; streaming responses are sent chunk by chunk.
"""
from __future__ import annotations

import contextlib
import hashlib
import re
import resource
import selectors
import signal
import socket
import ssl
import subprocess
import time

import h11
import pytest
from conftest import eventually
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddpctl.testing import DDPClient

pytestmark = pytest.mark.timeout(180)
HOST = b"Host: 127.0.0.1\r\n"
NEXT = b"GET /testapp/http/echo HTTP/1.1\r\n" + HOST + b"\r\n"  # what a smuggler hides


def _connect(server, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    return sock


def _read_to_eof(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not data:
            return out
        out += data


def _responses(sock: socket.socket, count: int, method: bytes = b"GET",
               methods: list[bytes] | None = None) -> list[tuple[h11.Response, bytes]]:
    """Read ``count`` responses with h11 (a client's parser, as strict as the server's);
    the responses of pipelined requests must be read in one call (one parser)."""
    client = h11.Connection(h11.CLIENT)
    out = []
    for i in range(count):
        verb = methods[i] if methods else method
        client.send(h11.Request(method=verb, target="/", headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())
        response, body = None, b""
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(sock.recv(65536))
                continue
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        out.append((response, body))
        if client.our_state is h11.DONE and client.their_state is h11.DONE:
            client.start_next_cycle()
    return out


def _assert_refused(server, request: bytes, statuses=(400,)) -> bytes:
    """``request`` + a second request get one refusal with Connection: close, then EOF."""
    with _connect(server) as sock:
        sock.sendall(request + NEXT)
        data = _read_to_eof(sock)
    status = int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else None
    assert status in statuses, data[:300]
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    assert b"\r\nconnection: close" in head, data[:300]
    assert data.count(b"HTTP/1.1 ") == 1, data  # nothing after it was answered
    return data


SMUGGLING = {
    "two differing Content-Length": b"POST /testapp/http/echo HTTP/1.1\r\n" + HOST
    + b"Content-Length: 3\r\nContent-Length: 40\r\n\r\nabc",
    "two equal Content-Length": b"POST /testapp/http/echo HTTP/1.1\r\n" + HOST
    + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "Content-Length list": b"POST /testapp/http/echo HTTP/1.1\r\n" + HOST
    + b"Content-Length: 3, 3\r\n\r\nabc",
    "Content-Length and chunked": b"POST /testapp/http/echo HTTP/1.1\r\n" + HOST
    + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "chunked and Content-Length": b"POST /testapp/http/echo HTTP/1.1\r\n" + HOST
    + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "Content-Length +44": b"POST /testapp/http/echo HTTP/1.1\r\n" + HOST + b"Content-Length: +3\r\n\r\nabc",
    "Content-Length -1": b"POST /testapp/http/echo HTTP/1.1\r\n" + HOST + b"Content-Length: -1\r\n\r\n",
    "Content-Length hex": b"POST /testapp/http/echo HTTP/1.1\r\n" + HOST + b"Content-Length: 0x3\r\n\r\nabc",
    "bad chunk size": b"POST /testapp/http/echo HTTP/1.1\r\n" + HOST
    + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk size 0x": b"POST /testapp/http/echo HTTP/1.1\r\n" + HOST
    + b"Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
    "chunk size overflow": b"POST /testapp/http/echo HTTP/1.1\r\n" + HOST
    + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    "chunk without CRLF": b"POST /testapp/http/echo HTTP/1.1\r\n" + HOST
    + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",
    "Transfer-Encoding with space before colon": b"POST /testapp/http/echo HTTP/1.1\r\n" + HOST
    + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "Transfer-Encoding in HTTP/1.0": b"POST /testapp/http/echo HTTP/1.0\r\n" + HOST
    + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": b"GET /testapp/http/echo HTTP/1.1\r\n" + HOST + b"X-A: b\r\n c\r\n\r\n",
    "obs-fold of Transfer-Encoding": b"POST /testapp/http/echo HTTP/1.1\r\n" + HOST
    + b"Transfer-Encoding: identity\r\n chunked\r\n\r\n0\r\n\r\n",
    "bare LF": b"GET /testapp/http/echo HTTP/1.1\n" + HOST + b"X: y\n\n",
    "bare CR": b"GET /testapp/http/echo HTTP/1.1\r\n" + b"Host: 127.0.0.1\rX: y\r\n\r\n",
    "invalid header name": b"GET /testapp/http/echo HTTP/1.1\r\n" + HOST + b"X A: b\r\n\r\n",
    "NUL in value": b"GET /testapp/http/echo HTTP/1.1\r\n" + HOST + b"X: a\x00b\r\n\r\n",
    "two Host": b"GET /testapp/http/echo HTTP/1.1\r\n" + HOST + HOST + b"\r\n",
    "no Host": b"GET /testapp/http/echo HTTP/1.1\r\n\r\n",
    "HTTP/0.9 line": b"GET /\r\n\r\n",
    "space in target": b"GET /a b HTTP/1.1\r\n" + HOST + b"\r\n",
}


@pytest.mark.parametrize("shape", SMUGGLING)
def test_each_smuggling_shape_is_refused_and_the_connection_closed(server, shape):
    # h11 answers 501 to a transfer coding other than chunked before our own checks run
    _assert_refused(server, SMUGGLING[shape], statuses=(400, 501) if "obs-fold of" in shape else (400,))


@pytest.mark.parametrize("coding", [b"gzip", b"gzip, chunked", b"identity", b"chunked, chunked", b"foo"])
def test_unsupported_transfer_codings_get_501(server, coding):
    _assert_refused(server, b"POST /testapp/http/echo HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: "
                    + coding + b"\r\n\r\n0\r\n\r\n", statuses=(400, 501))


def test_http2_version_gets_505(server):
    _assert_refused(server, b"GET / HTTP/2.0\r\n" + HOST + b"\r\n", statuses=(505,))


_length = st.integers(min_value=0, max_value=99).map(lambda n: str(n).encode())
_cl_value = st.one_of(_length, st.builds(lambda a, b: a + b", " + b, _length, _length),
                      st.sampled_from([b"+3", b"-3", b" 3 x", b"3.0", b"", b"1e2"]))
_te_value = st.sampled_from([b"chunked", b"Chunked", b"gzip, chunked", b"chunked, identity", b" chunked"])
_name_case = st.sampled_from([str.lower, str.title, str.upper])


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(lengths=st.lists(_cl_value, min_size=1, max_size=3), te=st.lists(_te_value, max_size=2),
       case=_name_case, te_first=st.booleans())
def test_any_ambiguous_framing_is_refused(server, lengths, te, case, te_first):
    """Several Content-Length fields, a list or a malformed value, or Content-Length with
    Transfer-Encoding: always refused, and the request hidden after it never answered."""
    cl = [case("content-length").encode() + b": " + v for v in lengths]
    tes = [case("transfer-encoding").encode() + b": " + v for v in te]
    if len(lengths) == 1 and not te and re.fullmatch(rb"[0-9]+", lengths[0]):
        return  # one well-formed Content-Length: unambiguous (tested below)
    fields = tes + cl if te_first else cl + tes
    request = (b"POST /testapp/http/echo HTTP/1.1\r\n" + HOST + b"\r\n".join(fields) + b"\r\n\r\n"
               + b"0\r\n\r\n")
    _assert_refused(server, request, statuses=(400, 501))


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.binary(max_size=3000), cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=6),
       extension=st.booleans())
def test_chunked_request_bodies_reach_the_view(server, body, cuts, extension):
    points = sorted({0, len(body), *(c for c in cuts if c <= len(body))})
    chunks = [body[a:b] for a, b in zip(points, points[1:], strict=False)]
    encoded = b"".join(b"%x%s\r\n%s\r\n" % (len(c), b";x=y" if extension else b"", c) for c in chunks if c)
    with _connect(server) as sock:
        sock.sendall(b"POST /testapp/http/echo HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
                     + encoded + b"0\r\n\r\n" + NEXT)
        (response, answer), (second, _) = _responses(sock, 2)
    assert response.status_code == 200
    assert answer.decode() == f"{len(body)} {hashlib.sha256(body).hexdigest()}"
    assert second.status_code == 200  # the connection was kept alive


def test_keep_alive_serves_several_requests_and_pipelining(server):
    body = b"x" * 1000
    post = (b"POST /testapp/http/echo HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    with _connect(server) as sock:
        for _ in range(3):  # one after the other
            sock.sendall(post)
            [(response, answer)] = _responses(sock, 1)
            assert response.status_code == 200
            assert answer.decode() == f"1000 {hashlib.sha256(body).hexdigest()}"
        sock.sendall(post + NEXT + post)  # pipelined
        answers = _responses(sock, 3)
        assert [r.status_code for r, _ in answers] == [200, 200, 200]
        assert answers[1][1].decode().startswith("0 ")


def test_head_has_the_get_headers_and_no_body(server):
    with _connect(server) as sock:
        sock.sendall(b"GET /testapp/http/echo HTTP/1.1\r\n" + HOST + b"\r\n")
        [(get, get_body)] = _responses(sock, 1)
        sock.sendall(b"HEAD /testapp/http/echo HTTP/1.1\r\n" + HOST + b"\r\n" + NEXT)
        (head, head_body), (after, _) = _responses(sock, 2, methods=[b"HEAD", b"GET"])
        assert head.status_code == 200 and head_body == b""
        assert dict(head.headers)[b"content-length"] == dict(get.headers)[b"content-length"] \
            == str(len(get_body)).encode()
        assert after.status_code == 200  # the connection is still in sync


def test_head_of_a_file_response(start_server, tmp_path):
    big = tmp_path / "file.bin"
    big.write_bytes(b"z" * 300_000)
    server = start_server(env={"DDPCTL_TEST_BIG_FILE": str(big)})
    with _connect(server) as sock:
        sock.sendall(b"HEAD /testapp/http/file HTTP/1.1\r\n" + HOST + b"\r\n")
        [(head, body)] = _responses(sock, 1, method=b"HEAD")
        sock.sendall(b"GET /testapp/http/file HTTP/1.1\r\n" + HOST + b"\r\n")
        [(get, get_body)] = _responses(sock, 1)
    assert head.status_code == get.status_code == 200 and body == b""
    assert dict(head.headers)[b"content-length"] == b"300000"
    assert get_body == big.read_bytes()


def test_expect_100_continue(server):
    body = b"y" * 5000
    with _connect(server) as sock:
        sock.sendall(b"POST /testapp/http/echo HTTP/1.1\r\n" + HOST + b"Expect: 100-continue\r\n"
                     b"Content-Length: 5000\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(1)
        assert interim.startswith(b"HTTP/1.1 100 ")
        sock.sendall(body)
        [(response, answer)] = _responses(sock, 1)
    assert response.status_code == 200
    assert answer.decode() == f"5000 {hashlib.sha256(body).hexdigest()}"


def test_limits_on_request_line_and_headers(server):
    _assert_refused(server, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + HOST + b"\r\n", statuses=(414,))
    _assert_refused(server, b"GET / HTTP/1.1\r\n" + HOST + b"".join(b"X-%d: y\r\n" % i for i in range(101))
                    + b"\r\n", statuses=(431,))
    _assert_refused(server, b"GET / HTTP/1.1\r\n" + HOST + b"X: " + b"z" * 17000 + b"\r\n\r\n",
                    statuses=(431,))
    with _connect(server) as sock:  # a head sent in pieces over the limit: refused before it ends
        sock.sendall(b"GET / HTTP/1.1\r\n" + HOST)
        for _ in range(40):
            sock.sendall(b"X: " + b"z" * 1000 + b"\r\n")
        data = _read_to_eof(sock)
    assert data.startswith(b"HTTP/1.1 431 ")


def test_streaming_response_sends_its_first_event_before_the_end(server, tmp_path):
    """Server-sent events through a Django StreamingHttpResponse."""
    release = tmp_path / "release"
    with _connect(server, timeout=20) as sock:
        sock.sendall(b"GET /testapp/http/sse?release=%s HTTP/1.1\r\n" % str(release).encode() + HOST
                     + b"Connection: close\r\n\r\n")
        data = b""
        while b"data: first" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        assert b"transfer-encoding: chunked" in data.lower()
        assert b"data: second" not in data and not data.endswith(b"0\r\n\r\n")  # the stream goes on
        release.touch()
        data += _read_to_eof(sock)
    assert data.index(b"data: first") < data.index(b"data: second")
    assert data.endswith(b"0\r\n\r\n")


def test_a_streaming_generator_can_query_the_database_per_chunk(server):
    with _connect(server) as sock:
        sock.sendall(b"GET /testapp/http/stream-db?chunks=30 HTTP/1.1\r\n" + HOST + b"\r\n")
        [(response, body)] = _responses(sock, 1)
    assert response.status_code == 200
    assert body.decode().split() == [str(i + 1) for i in range(30)]


def _raise_own_open_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"the open-file hard limit ({hard}) is below {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def test_slowloris_half_open_requests_are_closed_while_new_clients_are_served(start_server):
    count = 2000
    _raise_own_open_file_limit(count + 500)
    server = start_server("--header-timeout", "2")
    idle: list[socket.socket] = []
    selector = selectors.DefaultSelector()
    try:
        for i in range(count):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET /testapp/http/echo HTTP/1.1\r\n" if i % 2 else b"GET /")  # never finished
            idle.append(sock)
        # Meanwhile, a new HTTP client and a DDP client are served.
        with _connect(server) as sock:
            sock.sendall(b"GET /testapp/http/echo HTTP/1.1\r\n" + HOST + b"\r\n")
            [(response, _)] = _responses(sock, 1)
            assert response.status_code == 200
        with DDPClient(server.ws_url) as client:
            client.connect()
            assert client.call("echo", 1, "a") == [1, "a"]
        # Every half-open request is closed by the server (after a 408 answer).
        for sock in idle:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        open_ = set(idle)
        deadline = time.monotonic() + 60
        while open_ and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1.0):
                sock = key.fileobj
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    open_.discard(sock)
                else:
                    assert data.startswith(b"HTTP/1.1 408 "), data
        assert not open_, f"{len(open_)} of {count} half-open connections still open"
    finally:
        selector.close()
        for sock in idle:
            sock.close()


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_slow_readers_of_a_large_file_keep_memory_bounded(start_server, tmp_path):
    """... and hold no database connection (the view's went back when it returned)."""
    size = 64 << 20
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        block = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB
        for _ in range(size // len(block)):
            f.write(block)
    server = start_server("--db-connections", "1", env={"DDPCTL_TEST_BIG_FILE": str(big)})
    with _connect(server) as sock:  # warm up: Django's first request imports and allocates
        sock.sendall(b"GET /testapp/http/echo HTTP/1.1\r\n" + HOST + b"\r\n")
        _responses(sock, 1)
    before = _rss(server.process.pid)
    readers = []
    with contextlib.ExitStack() as stack:
        for _ in range(5):
            sock = stack.enter_context(_connect(server, timeout=20))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            sock.sendall(b"GET /testapp/http/file HTTP/1.1\r\n" + HOST + b"\r\n")
            readers.append(sock)
        received = [0] * len(readers)
        for _ in range(20):  # slow: a little from each, then the server must wait
            for i, sock in enumerate(readers):
                received[i] += len(sock.recv(65536))
            time.sleep(0.02)
        assert all(n > 0 for n in received)
        growth = _rss(server.process.pid) - before
        print(f"server RSS growth with 5 slow readers: {growth / 2**20:.1f} MiB")
        assert growth < 64 << 20, f"RSS grew by {growth >> 20} MiB with 5 slow readers"
        # The views' database connection (the only one) is not held by the slow readers.
        with _connect(server) as sock:
            sock.sendall(b"GET /testapp/pg-sleep/0 HTTP/1.1\r\n" + HOST + b"\r\n")
            [(response, _)] = _responses(sock, 1)
        assert response.status_code == 200
    # And a reader that reads it all gets the whole file, intact.
    with _connect(server, timeout=30) as sock:
        sock.sendall(b"GET /testapp/http/file HTTP/1.1\r\n" + HOST + b"\r\n")
        client = h11.Connection(h11.CLIENT)
        client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())
        digest, length = hashlib.sha256(), 0
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(sock.recv(1 << 20))
            elif isinstance(event, h11.Response):
                assert event.status_code == 200
                assert dict(event.headers)[b"content-length"] == str(size).encode()
            elif isinstance(event, h11.Data):
                digest.update(event.data)
                length += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
    assert length == size
    assert digest.hexdigest() == hashlib.sha256(big.read_bytes()).hexdigest()


def test_the_iterable_is_closed_when_the_client_goes_away(server, tmp_path):
    release = tmp_path / "release"
    with _connect(server) as sock:
        sock.sendall(b"GET /testapp/http/sse?forever=1&release=%s HTTP/1.1\r\n" % str(release).encode()
                     + HOST + b"\r\n")
        data = b""
        while b"data: first" not in data:
            data += sock.recv(65536)
    release.touch()  # the generator goes on, each write now fails
    eventually(lambda: (tmp_path / "release.closed").exists(), timeout=30)


def test_websocket_frames_sent_with_the_upgrade_request_are_read(server):
    """Bytes that arrive with the request head (h11's trailing data) reach the WebSocket."""
    import json

    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import TextMessage

    ws = Connection(ConnectionType.CLIENT)
    frame = ws.send(TextMessage(json.dumps({"msg": "connect", "version": "1", "support": ["1"]})))
    with _connect(server) as sock:
        sock.sendall(b"GET /websocket HTTP/1.1\r\n" + HOST + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                     + frame)
        data = b""
        while b"connected" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    assert data.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in data


def test_http_1_0_gets_a_length_and_a_close(server):
    with _connect(server) as sock:
        sock.sendall(b"GET /testapp/http/echo HTTP/1.0\r\n\r\n")
        data = _read_to_eof(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"content-length: %d" % len(body) in head.lower()


def test_shutdown_finishes_requests_in_flight_and_closes_idle_connections(start_server, tmp_path):
    server = start_server()
    release = tmp_path / "release"
    with _connect(server, timeout=20) as idle, _connect(server, timeout=20) as streaming:
        idle.sendall(b"GET /testapp/http/echo HTTP/1.1\r\n" + HOST + b"\r\n")
        _responses(idle, 1)  # now idle, kept alive
        streaming.sendall(b"GET /testapp/http/sse?release=%s HTTP/1.1\r\n" % str(release).encode() + HOST
                          + b"\r\n")
        data = b""
        while b"data: first" not in data:
            data += streaming.recv(65536)
        server.process.send_signal(signal.SIGTERM)
        assert _read_to_eof(idle) == b""  # closed without an answer
        release.touch()
        data += _read_to_eof(streaming)
        assert b"data: second" in data and data.endswith(b"0\r\n\r\n")  # finished whole
    assert server.process.wait(20) == 0


def test_a_stalled_request_body_gets_408_after_the_body_timeout(start_server):
    server = start_server("--body-timeout", "1")
    with _connect(server, timeout=20) as sock:
        sock.sendall(b"POST /testapp/http/echo HTTP/1.1\r\n" + HOST + b"Content-Length: 100\r\n\r\n"
                     + b"x" * 10)
        data = _read_to_eof(sock, timeout=20)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert data.count(b"HTTP/1.1 ") == 1


def test_serve_raises_its_soft_open_file_limit_to_the_hard_limit(start_server):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 1024:
        pytest.skip(f"hard limit {hard}: nothing to raise to")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # inherited by the server
    try:
        server = start_server()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with open(f"/proc/{server.process.pid}/limits") as limits:
        line = next(line for line in limits if line.startswith("Max open files"))
    assert line.split()[3:5] == [str(hard), str(hard)], line


def test_a_stream_that_fails_midway_is_cut_without_its_last_chunk(server):
    """The client must not take a broken response for a complete one."""
    with _connect(server) as sock:
        sock.sendall(b"GET /testapp/http/stream-db?chunks=5&fail=3 HTTP/1.1\r\n" + HOST + b"\r\n")
        data = _read_to_eof(sock)
    assert data.startswith(b"HTTP/1.1 200 ") and b"\r\n3\n\r\n" in data
    assert not data.endswith(b"0\r\n\r\n")


def test_tls_handshake_counts_against_the_header_timeout(start_server, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server = start_server("--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--header-timeout", "1")
    with _connect(server, timeout=20) as silent:  # never says hello
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        with context.wrap_socket(_connect(server), server_hostname="127.0.0.1") as sock:
            sock.sendall(b"GET /testapp/http/echo HTTP/1.1\r\n" + HOST + b"\r\n")
            [(response, _)] = _responses(sock, 1)
        assert response.status_code == 200
        assert dict(response.headers)[b"x-scheme"] == b"https"
        assert _read_to_eof(silent) == b""  # closed by the server


def test_environ_headers_and_path(server):
    """Repeated fields joined with ", "; a name with "_" dropped (it would pose as "-");
    PATH_INFO percent-decoded as latin-1 (PEP 3333), which Django reads back as UTF-8."""
    with _connect(server) as sock:
        sock.sendall(b"GET /testapp/http/echo HTTP/1.1\r\n" + HOST + b"X-Test: a\r\nX-Test: b\r\n\r\n"
                     b"GET /testapp/http/echo HTTP/1.1\r\n" + HOST + b"X_Test: spoofed\r\n\r\n"
                     b"GET /testapp/http/path/caf%C3%A9%20%2F%3F/x?q=1 HTTP/1.1\r\n" + HOST + b"\r\n")
        (joined, _), (dropped, _), (path, body) = _responses(sock, 3)
    assert dict(joined.headers)[b"x-test"] == b"a, b"
    assert dict(dropped.headers)[b"x-test"] == b"-"
    assert path.status_code == 200 and body.decode() == "café /?/x"


def test_a_chunked_body_over_its_limit_gets_413(start_server):
    server = start_server("--max-chunked-body", "64K")
    chunk = b"q" * 8192
    with _connect(server) as sock:
        sock.sendall(b"POST /testapp/http/echo HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(12):  # 96 KiB
                sock.sendall(b"2000\r\n" + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n" + NEXT)
        except OSError:
            pass  # closed while we were still sending: the answer is waiting
        data = _read_to_eof(sock)
    assert data.startswith(b"HTTP/1.1 413 "), data[:200]
    assert data.count(b"HTTP/1.1 ") == 1


_cookie_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-",
                       min_size=1, max_size=12)
_cookie_value = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~:/", max_size=20)
_padding = st.text(alphabet=" \t", max_size=3)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(cookies=st.dictionaries(_cookie_name, _cookie_value, max_size=3), before=_padding, after=_padding,
       value=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=20))
def test_cookies_and_padded_header_values_are_sent_trimmed(server, cookies, before, after, value):
    """Any response Django makes is sent: cookies (Django's WSGI handler writes Set-Cookie
    values with a leading space) and header values with leading/trailing whitespace go out
    trimmed (RFC 9110 5.5), never as a 500."""
    from urllib.parse import urlencode

    query = urlencode([*(("cookie", f"{k}={v}") for k, v in cookies.items()),
                       ("header", before + value + after)])
    with _connect(server) as sock:
        sock.sendall(b"GET /testapp/http/cookies?" + query.encode() + b" HTTP/1.1\r\n" + HOST + b"\r\n")
        ((response, body),) = _responses(sock, 1)
    assert response.status_code == 200 and body == b"ok"
    headers = [(n.decode(), v.decode()) for n, v in response.headers]
    assert dict(headers)["x-padded"] == value
    sent = sorted(v.split(";")[0] for n, v in headers if n == "set-cookie")
    from http.cookies import SimpleCookie

    expected = sorted(SimpleCookie({k: v})[k].OutputString().split(";")[0] for k, v in cookies.items())
    assert sent == expected


def test_the_admin_login_page_sets_its_csrf_cookie_and_logs_in(server):
    """The Django admin over ddpctl's HTTP: its login form's CSRF cookie is set (a 500 before)."""
    import http.cookiejar
    import urllib.request
    from urllib.parse import urlencode

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{server.url}/admin/login/", timeout=10) as response:
        page = response.read().decode()
        assert response.status == 200
    assert any(cookie.name == "csrftoken" for cookie in jar)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    data = urlencode({"csrfmiddlewaretoken": token, "username": "nobody", "password": "wrong",
                      "next": "/admin/"}).encode()
    request = urllib.request.Request(f"{server.url}/admin/login/", data=data,
                                     headers={"Referer": f"{server.url}/admin/login/"})
    with opener.open(request, timeout=10) as response:  # the form, again: CSRF passed, login failed
        assert response.status == 200 and "csrfmiddlewaretoken" in response.read().decode()
