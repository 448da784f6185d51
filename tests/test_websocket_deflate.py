"""permessage-deflate (RFC 7692): negotiation, compressed server frames, compressed client
frames, the decompression bomb, the off switch, and a real client (npm ``ws``)."""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, TextMessage

from ddpctl.server import deflate as deflate_module
from ddpctl.server.deflate import (
    COMPRESSION_THRESHOLD,
    DeflateParams,
    FrameCompressor,
    InboundDeflate,
    negotiate,
)
from ddpctl.server.websocket import WebSocket, text_frame

JS = Path(__file__).resolve().parent / "js"
ACCEPTED = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


# -- negotiation ------------------------------------------------------------------------

@pytest.mark.parametrize("header, expected", [
    ("permessage-deflate", (ACCEPTED, DeflateParams())),
    ("permessage-deflate; client_max_window_bits", (ACCEPTED, DeflateParams())),
    ("Permessage-Deflate; Client_No_Context_Takeover", (ACCEPTED, DeflateParams())),
    ("permessage-deflate; server_no_context_takeover; client_no_context_takeover",
     (ACCEPTED, DeflateParams())),
    ("permessage-deflate; server_max_window_bits=10",
     (ACCEPTED + "; server_max_window_bits=10", DeflateParams(10, 15))),
    ('permessage-deflate; client_max_window_bits="9"',
     (ACCEPTED + "; client_max_window_bits=9", DeflateParams(15, 9))),
    ("permessage-deflate; client_max_window_bits=8; server_max_window_bits=15",
     (ACCEPTED + "; server_max_window_bits=15; client_max_window_bits=8", DeflateParams(15, 8))),
    # several offers: the first acceptable one wins
    ("permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=9",
     (ACCEPTED + "; server_max_window_bits=9", DeflateParams(9, 15))),
    ("x-webkit-deflate-frame, permessage-deflate; unknown=1, permessage-deflate",
     (ACCEPTED, DeflateParams())),
    ('permessage-deflate; client_max_window_bits="1,5", permessage-deflate',
     (ACCEPTED, DeflateParams())),
    # declined: nothing acceptable
    (None, None),
    ("", None),
    ("x-webkit-deflate-frame", None),
    ("permessage-deflate; unknown", None),
    ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
    ("permessage-deflate; client_max_window_bits=10; client_max_window_bits=11", None),
    ("permessage-deflate; server_max_window_bits", None),
    ("permessage-deflate; server_max_window_bits=8", None),  # zlib has no 256-byte window
    ("permessage-deflate; server_max_window_bits=16", None),
    ("permessage-deflate; server_max_window_bits=010", None),
    ("permessage-deflate; client_max_window_bits=7", None),
    ("permessage-deflate; client_max_window_bits=", None),
    ("permessage-deflate; client_no_context_takeover=1", None),
    ('permessage-deflate; server_max_window_bits="1', None),
])
def test_negotiation(header, expected):
    assert negotiate(header) == expected


@given(st.text(alphabet=st.sampled_from(list('permssage-dflt_ wincoxkbu=;,"\\0123456789')), max_size=120))
def test_negotiation_never_fails_and_answers_only_what_it_may(header):
    result = negotiate(header)
    if result is None:
        return
    response, params = result
    assert response.startswith(ACCEPTED)
    assert 9 <= params.server_max_window_bits <= 15 and 8 <= params.client_max_window_bits <= 15
    if "server_max_window_bits=" in response:
        assert "server_max_window_bits" in header
    # the server never answers parameters the client cannot parse back
    assert negotiate(response) is not None or "client_max_window_bits=8" in response


# -- compressed server frames -----------------------------------------------------------

def parse_frames(data: bytes) -> list[tuple[bool, int, bytes]]:
    """(rsv1, opcode, payload) of each complete unmasked frame in ``data``."""
    frames, i = [], 0
    while i < len(data):
        first, second = data[i], data[i + 1]
        n, i = second & 0x7F, i + 2
        if n == 126:
            n, i = struct.unpack("!H", data[i:i + 2])[0], i + 2
        elif n == 127:
            n, i = struct.unpack("!Q", data[i:i + 8])[0], i + 8
        assert first & 0x80 and not first & 0x30 and not second & 0x80
        assert len(data) >= i + n, "a frame cut short"
        frames.append((bool(first & 0x40), first & 0x0F, data[i:i + n]))
        i += n
    assert i == len(data)
    return frames


def inflate(payload: bytes, inflater=None) -> bytes:
    inflater = inflater or zlib.decompressobj(-15)
    return inflater.decompress(payload + b"\x00\x00\xff\xff")


texts = st.lists(st.one_of(
    st.text(max_size=COMPRESSION_THRESHOLD * 2),
    st.text(alphabet="abc{}\":,é€😀", min_size=COMPRESSION_THRESHOLD - 3, max_size=COMPRESSION_THRESHOLD + 3),
    st.builds(lambda n, s: json.dumps({"msg": "added", "id": str(n), "fields": {"s": s * 20}}),
              st.integers(), st.text(max_size=30)),
    st.binary(min_size=100, max_size=70000).map(lambda b: base64.b85encode(b).decode()),
), max_size=12)


@settings(max_examples=60, deadline=None)
@given(texts, st.integers(9, 15), st.booleans())
def test_frames_inflate_to_exactly_the_texts(texts, window_bits, client_keeps_context):
    """Whatever the texts, the frames inflate to them, with a fresh inflater per message or
    one kept across messages (server_no_context_takeover: both work), within the window."""
    compressor = FrameCompressor(window_bits, max_entries=4, max_bytes=1 << 16)
    shared = zlib.decompressobj(-window_bits)
    frames = parse_frames(b"".join(compressor.frame(t) for t in texts + texts))  # second time cached
    assert len(frames) == 2 * len(texts)
    for text, (rsv1, opcode, payload) in zip(texts + texts, frames, strict=True):
        assert opcode == 1
        if rsv1:
            assert len(text) >= COMPRESSION_THRESHOLD and len(payload) < len(text.encode())
            got = inflate(payload, shared if client_keeps_context else zlib.decompressobj(-window_bits))
        else:
            got = payload
        assert got.decode() == text


@settings(max_examples=40, deadline=None)
@given(texts, st.sampled_from([None, "permessage-deflate", "permessage-deflate; server_max_window_bits=9",
                               "permessage-deflate; client_max_window_bits; server_max_window_bits=12"]))
def test_websocket_sends_what_its_negotiated_params_allow(texts, offer):
    """``WebSocket.send_many``: RSV1 only when deflate was agreed, within the agreed window."""
    sent: list[bytes] = []
    agreed = negotiate(offer)
    params = agreed[1] if agreed else None
    ws = WebSocket(lambda n: b"", lambda view: sent.append(bytes(view)) or len(view), None, 1 << 20, params)
    ws.send_many(texts)
    frames = parse_frames(b"".join(sent))
    for text, (rsv1, _, payload) in zip(texts, frames, strict=True):
        assert not rsv1 or params is not None
        bits = params.server_max_window_bits if params else 15
        assert (inflate(payload, zlib.decompressobj(-bits)) if rsv1 else payload) == text.encode()


def test_fan_out_compresses_once():
    compressor = FrameCompressor()
    text = json.dumps({"msg": "changed", "collection": "books", "id": "1",
                       "fields": {"blurb": "words " * 50}})
    frames = {compressor.frame(text) for _ in range(1000)}
    assert len(frames) == 1 and compressor.compressed == 1
    assert parse_frames(frames.pop())[0][0]  # RSV1


def test_cache_keeps_what_is_used():
    compressor = FrameCompressor(max_entries=10, max_bytes=1 << 20)
    popular = "popular " * 40
    for i in range(100):
        compressor.frame(popular)
        compressor.frame(f"{i:05d}" + "x" * 1000)
    assert compressor.compressed == 101  # the popular text once, each other once


def test_cache_stays_bounded():
    compressor = FrameCompressor(max_entries=10, max_bytes=40_000)
    for i in range(500):
        compressor.frame(f"{i:05d}" + "x" * 1000)
    assert len(compressor._cache) <= 10 and compressor._bytes <= 40_000


# -- compressed client frames: inflation and its limit ------------------------------------

def client_frame(payload: bytes, rsv1: bool, opcode: int = 1, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    head = bytes((first, 0x80 | n)) if n < 126 else (
        struct.pack("!BBH", first, 0xFE, n) if n < 65536 else struct.pack("!BBQ", first, 0xFF, n))
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 4096 else _mask(payload, mask)
    return head + mask + masked


def _mask(payload: bytes, mask: bytes) -> bytes:
    key = int.from_bytes((mask * (len(payload) // 4 + 1))[:len(payload)], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(len(payload), "big")


def deflate(payload: bytes) -> bytes:
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (deflater.compress(payload) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]


def bomb(inflated_mib: int) -> bytes:
    """Deflate data of about 1 KiB per MiB that inflates to ``inflated_mib`` MiB of zeros,
    made without compressing it all: once the window is all zeros, each sync-flushed MiB
    of zeros deflates to the same bytes."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    mib = b"\0" * (1 << 20)
    first = deflater.compress(mib) + deflater.flush(zlib.Z_SYNC_FLUSH)
    second = deflater.compress(mib) + deflater.flush(zlib.Z_SYNC_FLUSH)
    assert second == deflater.compress(mib) + deflater.flush(zlib.Z_SYNC_FLUSH)
    return (first + second * (inflated_mib - 1))[:-4]


def server_side(limit: int) -> tuple[Connection, InboundDeflate]:
    extension = InboundDeflate(limit)
    return Connection(ConnectionType.SERVER, [extension]), extension


@given(st.lists(st.text(max_size=3000), min_size=1, max_size=6), st.integers(1, 5), st.booleans())
@settings(deadline=None)
def test_compressed_client_messages_inflate(texts, fragments, ping_inside):
    connection, _ = server_side(1 << 20)
    for text in texts:
        payload = deflate(text.encode())
        step = len(payload) // fragments + 1
        pieces = [payload[i:i + step] for i in range(0, len(payload), step)] or [b""]
        for k, piece in enumerate(pieces):
            last = k == len(pieces) - 1
            connection.receive_data(client_frame(piece, rsv1=k == 0, opcode=1 if k == 0 else 0, fin=last))
            if ping_inside and not last:
                connection.receive_data(client_frame(b"hi", rsv1=False, opcode=9))
        connection.receive_data(client_frame(text.encode(), rsv1=False))  # uncompressed ones too
    got, current = [], []
    for event in connection.events():
        assert not isinstance(event, CloseConnection), event
        if isinstance(event, TextMessage):
            current.append(event.data)
            if event.message_finished:
                got.append("".join(current))
                current = []
    assert got == [t for text in texts for t in (text, text)]


@pytest.mark.parametrize("limit, inflated_mib", [
    (1 << 20, 1024),  # ~1 MiB on the wire, 1 GiB inflated
    (64 << 10, 1),  # ~1 KiB on the wire (deflate's best is ~1:1032), 1 MiB inflated
    (1024, 1),
])
@pytest.mark.parametrize("fragments", [1, 7])
def test_a_decompression_bomb_is_refused_after_inflating_the_limit_only(limit, inflated_mib, fragments):
    connection, extension = server_side(limit)
    data = bomb(inflated_mib)
    assert len(data) < 1100 * inflated_mib
    step = len(data) // fragments + 1
    for k, i in enumerate(range(0, len(data), step)):
        connection.receive_data(client_frame(data[i:i + step], rsv1=k == 0, opcode=1 if k == 0 else 0,
                                             fin=i + step >= len(data)))
    events = list(connection.events())
    assert isinstance(events[-1], CloseConnection) and events[-1].code == 1009
    assert extension.inflated <= limit + 1  # not a byte more than the limit allows


def test_rsv1_on_a_control_frame_or_corrupt_data_fails():
    connection, _ = server_side(1 << 20)
    connection.receive_data(client_frame(b"x", rsv1=True, opcode=9))
    assert [e.code for e in connection.events() if isinstance(e, CloseConnection)] == [1002]
    connection, _ = server_side(1 << 20)
    connection.receive_data(client_frame(b"\xff\xff\xff\xff", rsv1=True))
    assert [e.code for e in connection.events() if isinstance(e, CloseConnection)] == [1007]


# -- a live server ----------------------------------------------------------------------

class RawClient:
    """A WebSocket client on a plain socket that shows every frame as it came."""

    def __init__(self, port: int, path: str = "/websocket", extensions: str | None = "permessage-deflate"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
        if extensions:
            request += f"Sec-WebSocket-Extensions: {extensions}\r\n"
        self.sock.sendall((request + "\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101"), lines
        self.headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        return data

    def frame(self) -> tuple[bool, int, bytes]:
        while True:
            if len(self.buffer) >= 2:
                n, start = self.buffer[1] & 0x7F, 2
                if n == 126 and len(self.buffer) >= 4:
                    n, start = struct.unpack("!H", self.buffer[2:4])[0], 4
                elif n == 127 and len(self.buffer) >= 10:
                    n, start = struct.unpack("!Q", self.buffer[2:10])[0], 10
                if n < 126 or start > 2:
                    if len(self.buffer) >= start + n:
                        frame = parse_frames(self.buffer[:start + n])[0]
                        self.buffer = self.buffer[start + n:]
                        return frame
            self.buffer += self._recv()

    def message(self) -> tuple[bool, dict]:
        """(was compressed, the DDP message); answers pings."""
        while True:
            rsv1, opcode, payload = self.frame()
            if opcode == 8:
                raise EOFError(int.from_bytes(payload[:2], "big"))
            if opcode == 1:
                text = inflate(payload) if rsv1 else payload
                message = json.loads(text)
                if message.get("msg") == "ping":
                    self.send({"msg": "pong"})
                    continue
                return rsv1, message

    def until(self, kind: str) -> tuple[bool, dict]:
        """The next message of this kind (others skipped: ``updated`` may come first)."""
        while True:
            compressed, message = self.message()
            if message["msg"] == kind:
                return compressed, message

    def send(self, message: dict | str, compress: bool = False) -> None:
        data = (message if isinstance(message, str) else json.dumps(message)).encode()
        self.sock.sendall(client_frame(deflate(data) if compress else data, rsv1=compress))

    def close_code(self) -> int:
        while True:
            _, opcode, payload = self.frame()
            if opcode == 8:
                return int.from_bytes(payload[:2], "big")


CONNECT = {"msg": "connect", "version": "1", "support": ["1"]}


def test_server_sends_compressed_frames_and_reads_compressed_ones(server):
    client = RawClient(server.port)
    assert client.headers["sec-websocket-extensions"] == ACCEPTED
    client.send(CONNECT, compress=True)
    compressed, connected = client.message()
    assert connected["msg"] == "connected" and not compressed  # short: sent as is
    blurb = "A tale of two databases, " * 40
    client.send({"msg": "sub", "id": "s1", "name": "echo_params", "params": [blurb, "ü€😀" * 50]},
                compress=True)
    compressed, added = client.message()
    assert compressed and added["msg"] == "added" and added["fields"]["params"] == [blurb, "ü€😀" * 50]
    assert client.message() == (False, {"msg": "ready", "subs": ["s1"]})
    client.send({"msg": "method", "method": "echo", "id": "m1", "params": [blurb]})  # uncompressed too
    compressed, result = client.until("result")
    assert compressed and result == {"msg": "result", "id": "m1", "result": [blurb]}


def test_sockjs_websocket_is_compressed_too(server):
    client = RawClient(server.port, "/sockjs/123/abcdefgh/websocket")
    assert client.headers["sec-websocket-extensions"] == ACCEPTED
    assert client.frame() == (False, 1, b"o")
    client.send(json.dumps([json.dumps(CONNECT)]), compress=True)
    rsv1, _, payload = client.frame()
    assert json.loads(json.loads(payload[1:])[0])["msg"] == "connected"
    client.send(json.dumps([json.dumps({"msg": "method", "method": "echo", "id": "m1",
                                        "params": ["x y z " * 100]})]), compress=True)
    while True:
        rsv1, _, payload = client.frame()
        text = inflate(payload) if rsv1 else payload
        messages = [json.loads(m) for m in json.loads(text[1:])]
        results = [m for m in messages if m["msg"] == "result"]
        if results:
            break
    assert rsv1 and results[0]["result"] == ["x y z " * 100]


def test_an_unacceptable_offer_gets_an_uncompressed_websocket(server):
    client = RawClient(server.port, extensions="permessage-deflate; server_max_window_bits=8")
    assert "sec-websocket-extensions" not in client.headers
    client.send(CONNECT)
    assert client.message()[1]["msg"] == "connected"


def _peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))


def test_decompression_bomb_closes_with_1009_cheaply(start_server):
    live = start_server()
    client = RawClient(live.port)
    client.send(CONNECT)
    client.message()
    before = _peak_rss_kib(live.process.pid)
    client.sock.sendall(client_frame(bomb(1024), rsv1=True))  # 1 MiB that inflates to 1 GiB
    assert client.close_code() == 1009
    assert _peak_rss_kib(live.process.pid) - before < 64 << 10  # never near the 1 GiB
    other = RawClient(live.port)
    other.send(CONNECT)
    assert other.message()[1]["msg"] == "connected"


@pytest.mark.parametrize("args, env", [
    (["--no-websocket-compression"], {}),
    ([], {"DDPCTL_WEBSOCKET_COMPRESSION": "0"}),
    ([], {"SERVER_WEBSOCKET_COMPRESSION": "0"}),
    ([], {"SERVER_WEBSOCKET_COMPRESSION": "null"}),
])
def test_compression_can_be_turned_off(start_server, args, env):
    live = start_server(*args, env=env)
    client = RawClient(live.port)
    assert "sec-websocket-extensions" not in client.headers
    client.send(CONNECT)
    client.send({"msg": "method", "method": "echo", "id": "m1", "params": ["x y z " * 100]})
    assert client.message()[1]["msg"] == "connected"
    rsv1, result = client.until("result")
    assert not rsv1 and result["result"] == ["x y z " * 100]


@pytest.mark.parametrize("value", ["{}"])  # falsy in Python, truthy in JavaScript
def test_meteor_variable_with_a_truthy_value_keeps_it_on(start_server, value):
    live = start_server(env={"SERVER_WEBSOCKET_COMPRESSION": value})
    assert RawClient(live.port).headers["sec-websocket-extensions"] == ACCEPTED


def test_npm_ws_client_negotiates_and_receives_compressed_data(server, sql, clean):
    node = shutil.which("node")
    assert node and (JS / "node_modules" / "ws").is_dir(), "run scripts/test (npm ci)"
    result = subprocess.run([node, str(JS / "ws_deflate.js"), str(server.port)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["extensions"] == "permessage-deflate" and report["header"] == ACCEPTED
    assert report["added"] == 20 and report["changed"] is True
    # the data came compressed: fewer bytes on the wire than in the messages
    assert report["bytesRead"] < report["messageBytes"] * 0.8, report  # uncompressed: over 1.0


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=5000))
def test_a_plain_frame_is_the_text_frame_of_the_text_whether_cached_or_not(text):
    try:
        expected = text_frame(text.encode())
    except UnicodeEncodeError:  # a lone surrogate: no frame, as str.encode says
        with pytest.raises(UnicodeEncodeError):
            deflate_module.plain_frame(text)
        return
    assert deflate_module.plain_frame(text) == expected
    assert deflate_module.plain_frame(text) == expected  # the second time from the cache, when kept


def test_the_plain_frame_cache_stays_bounded():
    for n in range(deflate_module.PLAIN_FRAME_CACHE_ENTRIES + 10):
        assert deflate_module.plain_frame(f"message {n}") == text_frame(f"message {n}".encode())
    assert 0 < len(deflate_module._PLAIN_FRAMES) <= deflate_module.PLAIN_FRAME_CACHE_ENTRIES
    long_text = "x" * (deflate_module.PLAIN_FRAME_CACHE_TEXT + 1)
    assert deflate_module.plain_frame(long_text) == text_frame(long_text.encode())
    assert long_text not in deflate_module._PLAIN_FRAMES
