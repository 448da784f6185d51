"""SockJS's HTTP fallback transports (xhr, xhr_streaming, eventsource, htmlfile, jsonp).

npm ``sockjs-client`` (tests/js/node_modules) forced onto each transport it can use in
Node runs DDP end to end; the browser-only transports (htmlfile, jsonp, the iframe page)
and the protocol's details -- open, heartbeat and close frames, ``2010``, session timeout,
CORS and preflights, response limits, flow control -- are checked over raw HTTP, in the
shapes of the sockjs-protocol test suite.
"""
import contextlib
import http.client
import json
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
from conftest import eventually

JS = Path(__file__).parent / "js"
CONNECT = {"msg": "connect", "version": "1", "support": ["1"]}


# -- a raw SockJS-over-HTTP client ------------------------------------------------------

class Response:
    def __init__(self, conn, response):
        self.conn, self.response = conn, response
        self.status = response.status
        self.headers = response.headers

    def read(self):
        try:
            return self.response.read()
        finally:
            self.conn.close()

    def readline(self):
        return self.response.readline()

    def read_exactly(self, n):
        data = b""
        while len(data) < n:
            chunk = self.response.read1(n - len(data))
            assert chunk, f"the response ended after {data!r}"
            data += chunk
        return data

    def close(self):
        self.conn.close()


class Session:
    """One SockJS session over HTTP: ``/sockjs/<server>/<session>/<transport>``."""

    def __init__(self, port, session_id=None):
        self.port = port
        self.id = session_id or uuid.uuid4().hex
        self.path = f"/sockjs/000/{self.id}"

    def open(self, method, transport, body=None, headers=None, query=""):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        conn.request(method, f"{self.path}/{transport}" + (f"?{query}" if query else ""), body=body,
                     headers=headers or {})
        return Response(conn, conn.getresponse())

    def request(self, method, transport, body=None, headers=None, query=""):
        response = self.open(method, transport, body, headers, query)
        return response.status, response.headers, response.read()

    def poll(self):
        """One ``xhr`` poll: its frame."""
        status, headers, body = self.request("POST", "xhr")
        assert status == 200, (status, body)
        assert body.endswith(b"\n") and body.count(b"\n") == 1, body
        return body[:-1].decode()

    def send(self, *messages, transport="xhr_send"):
        status, _, body = self.request("POST", transport, json.dumps([json.dumps(m) for m in messages]))
        assert status == 204, (status, body)

    def messages(self, count, timeout=15):
        """Poll until ``count`` DDP messages came (pings answered); they and other frames."""
        out, deadline = [], time.monotonic() + timeout
        while len(out) < count:
            assert time.monotonic() < deadline, f"got only {out}"
            frame = self.poll()
            for message in ddp_messages(frame):
                if message.get("msg") == "ping":
                    self.send({"msg": "pong"})
                else:
                    out.append(message)
        return out

    def connect(self):
        assert self.poll() == "o"
        self.send(CONNECT)
        [connected] = self.messages(1)
        assert connected["msg"] == "connected"
        return connected["session"]


def ddp_messages(frame):
    if frame in ("o", "h") or frame.startswith("c["):
        return []
    assert frame.startswith("a["), frame
    return [json.loads(text) for text in json.loads(frame[1:])]


def read_frame(stream):
    line = stream.readline()
    assert line.endswith(b"\n"), line
    return line[:-1].decode()


def results(messages):
    return [m["result"] for m in messages if m.get("msg") == "result"]


# -- sockjs-client from npm, one transport at a time ------------------------------------

@pytest.mark.parametrize("transport", ["websocket", "xhr-streaming", "xhr-polling", "eventsource"])
def test_sockjs_client_subscribes_calls_and_gets_live_changes(server, sql, transport):
    node = shutil.which("node")
    assert node and (JS / "node_modules" / "sockjs-client").is_dir(), "run scripts/test (npm ci in tests/js)"
    name = f"genre {transport} {uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([node, str(JS / "sockjs_ddp.js"), f"{server.url}/sockjs", transport, "AllGenres",
                             "echo", json.dumps([1, "two", {"three": 3}])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = json.loads(proc.stdout.readline() or "null")
        assert ready and ready.get("event") == "ready", (ready, proc.stderr.read() if not ready else "")
        assert ready["transport"] == transport
        sql("INSERT INTO bookstore_genre (name) VALUES (%s)", [name])  # a change made elsewhere
        out = json.loads(proc.stdout.readline())
        proc.wait(10)
    finally:
        proc.kill()
        proc.wait()
    assert out["ok"], out
    assert out["transport"] == transport and len(out["session"]) == 17
    assert out["result"] == [1, "two", {"three": 3}]
    assert [doc["fields"] for doc in out["live"]] == [{"name": name}]


# -- the protocol over raw HTTP ---------------------------------------------------------

def test_xhr_polling_session_with_ddp(server):
    s = Session(server.port)
    assert s.connect()
    s.send({"msg": "method", "method": "echo", "params": ["héllo \u2028"], "id": "1"})
    got = s.messages(2)
    assert sorted(m["msg"] for m in got) == ["result", "updated"] and results(got) == [["héllo \u2028"]]
    # the frame escapes what sockjs-node escapes (U+2028 would end a line of JavaScript)
    s.send({"msg": "method", "method": "echo", "params": ["\u2028"], "id": "2"})
    frame = s.poll()
    assert "\u2028" not in frame and "\\u2028" in frame


def test_polling_and_send_answers(server):
    s = Session(server.port)
    status, headers, body = s.request("POST", "xhr")
    assert (status, body) == (200, b"o\n")
    assert headers["Content-Type"] == "application/javascript; charset=UTF-8"
    assert headers["Cache-Control"] == "no-store, no-cache, no-transform, must-revalidate, max-age=0"
    assert "Set-Cookie" not in headers  # no JSESSIONID unless asked for (Meteor's default)
    assert headers["Access-Control-Allow-Origin"] == "*"
    status, headers, body = s.request("POST", "xhr_send", '["x"]')
    assert status == 204 and body == b"" and headers["Content-Type"] == "text/plain; charset=UTF-8"
    assert s.request("POST", "xhr_send", "")[::2] == (500, b"Payload expected.")
    assert s.request("POST", "xhr_send", "{}")[::2] == (500, b"Payload expected.")
    assert s.request("POST", "xhr_send", '"x"')[::2] == (500, b"Payload expected.")
    assert s.request("POST", "xhr_send", "[\"x\"")[::2] == (500, b"Broken JSON encoding.")
    assert s.request("POST", "xhr_send", b"\xff\xfe[")[::2] == (500, b"Broken JSON encoding.")
    unknown = Session(server.port)
    assert unknown.request("POST", "xhr_send", '["x"]')[0] == 404
    assert unknown.request("POST", "jsonp_send", "d=%5B%22x%22%5D",
                           {"Content-Type": "application/x-www-form-urlencoded"})[0] == 404
    # the wrong method on a transport's path: 405 naming the right ones
    status, headers, _ = s.request("GET", "xhr_send")
    assert status == 405 and set(headers["Allow"].split(", ")) == {"POST", "OPTIONS"}
    assert s.request("GET", "nonsense")[0] == 404
    assert s.request("GET", "websocket")[0] == 400  # no Upgrade
    # the session lives on after the bad sends: DDP works (after the "x" sent first)
    s.send(CONNECT)
    assert [m["msg"] for m in s.messages(2)] == ["error", "connected"]


@pytest.mark.parametrize("path,methods", [("/sockjs/info", "OPTIONS, GET"),
                                          ("/sockjs/000/abc/xhr", "OPTIONS, POST"),
                                          ("/sockjs/000/abc/xhr_send", "OPTIONS, POST"),
                                          ("/sockjs/000/abc/xhr_streaming", "OPTIONS, POST")])
@pytest.mark.parametrize("origin", [None, "http://localhost:3000"])
def test_preflights_and_cors(server, path, methods, origin):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    headers = {"Access-Control-Request-Headers": "content-type, x-requested-with",
               "Access-Control-Request-Method": "POST"}
    if origin:
        headers["Origin"] = origin
    conn.request("OPTIONS", path, headers=headers)
    response = conn.getresponse()
    assert response.read() == b"" and response.status == 204
    h = response.headers
    assert h["Access-Control-Allow-Methods"] == methods
    assert h["Access-Control-Allow-Headers"] == "content-type, x-requested-with"
    assert h["Access-Control-Max-Age"] == "31536000" and h["Cache-Control"] == "public, max-age=31536000"
    assert h["Expires"].endswith("GMT")
    if origin:
        assert h["Access-Control-Allow-Origin"] == origin and h["Access-Control-Allow-Credentials"] == "true"
    else:
        assert h["Access-Control-Allow-Origin"] == "*" and "Access-Control-Allow-Credentials" not in h
    conn.close()


def test_cors_on_requests_from_an_allowed_page_and_refusal_of_others(server):
    s = Session(server.port)
    status, headers, body = s.request("POST", "xhr", headers={"Origin": "http://localhost:3000"})
    assert (status, body) == (200, b"o\n")
    assert headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert headers["Access-Control-Allow-Credentials"] == "true" and headers["Vary"] == "Origin"
    status, headers, _ = s.request("POST", "xhr_send", '["x"]', {"Origin": "https://evil.example"})
    assert status == 403 and "Access-Control-Allow-Origin" not in headers


def test_xhr_streaming_prelude_frames_and_2010_for_a_second_receiver(server):
    s = Session(server.port)
    stream = s.open("POST", "xhr_streaming")
    assert stream.status == 200 and stream.headers["Content-Type"] == "application/javascript; charset=UTF-8"
    assert stream.read_exactly(2049) == b"h" * 2048 + b"\n"
    assert read_frame(stream) == "o"
    # a second receiver while the first is attached: 2010, and the first carries on
    status, _, body = s.request("POST", "xhr")
    assert (status, body) == (200, b'c[2010,"Another connection still open"]\n')
    second = s.open("POST", "xhr_streaming")
    assert second.read() == b"h" * 2048 + b'\nc[2010,"Another connection still open"]\n'
    s.send(CONNECT, {"msg": "method", "method": "echo", "params": [7], "id": "1"})
    got = []
    while len(got) < 3:
        got += ddp_messages(read_frame(stream))
    assert got[0]["msg"] == "connected" and results(got) == [[7]]
    stream.close()


def test_streaming_response_ends_after_128_kib_and_the_next_one_continues_in_order(server):
    s = Session(server.port)
    stream = s.open("POST", "xhr_streaming")
    stream.read_exactly(2049)
    assert read_frame(stream) == "o"
    s.send(CONNECT, {"msg": "sub", "id": "s", "name": "numbers", "params": [4000]})
    received, frames_bytes, ended = [], 0, False
    while not ended:
        line = stream.readline()
        if not line:
            ended = True
            break
        frames_bytes += len(line)
        received += ddp_messages(line[:-1].decode())
    assert 128 << 10 <= frames_bytes < (128 << 10) + (300 << 10)  # ends after the frame that passes it
    assert stream.response.isclosed()
    stream.close()
    while not any(m.get("msg") == "ready" for m in received):  # a new request gets the rest
        stream = s.open("POST", "xhr_streaming")
        stream.read_exactly(2049)
        while line := stream.readline():
            received += ddp_messages(line[:-1].decode())
            if any(m.get("msg") == "ready" for m in received):
                break
        stream.close()
    added = [int(m["id"]) for m in received if m.get("msg") == "added"]
    assert added == list(range(4000))


def test_eventsource_receiver(server):
    s = Session(server.port)
    stream = s.open("GET", "eventsource")
    assert stream.status == 200 and stream.headers["Content-Type"] == "text/event-stream"
    assert stream.read_exactly(2) == b"\r\n"
    assert stream.read_exactly(len(b"data: o\r\n\r\n")) == b"data: o\r\n\r\n"
    s.send(CONNECT, {"msg": "method", "method": "echo", "params": ["a%b\r\nc"], "id": "1"})
    got = []
    while len(got) < 3:
        event = b""
        while not event.endswith(b"\r\n\r\n"):
            event += stream.readline()
        assert event.startswith(b"data: ") and b"\r" not in event[:-4] and b"\n" not in event[:-4]
        frame = urllib.parse.unquote(event[6:-4].decode())  # the client unescapes %XX
        got += ddp_messages(frame)
    assert results(got) == [["a%b\r\nc"]]
    stream.close()


def test_htmlfile_receiver(server):
    s = Session(server.port)
    assert s.request("GET", "htmlfile") [::2] == (500, b'"callback" parameter required')
    assert s.request("GET", "htmlfile", query="c=x%3Balert(1)")[::2] == (500, b'invalid "callback" parameter')
    stream = s.open("GET", "htmlfile", query="c=_jp.a1b2")
    assert stream.status == 200 and stream.headers["Content-Type"] == "text/html; charset=UTF-8"
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += stream.readline()
    assert len(head) > 1024 and b"var c = parent._jp.a1b2;" in head
    assert stream.readline() == b"<script>\n"
    assert stream.readline() == b'p("o");\n'
    assert stream.readline() == b"</script>\r\n"
    s.send(CONNECT, {"msg": "method", "method": "echo", "params": ["</script><b>"], "id": "1"})
    got = []
    while len(got) < 3:
        assert stream.readline() == b"<script>\n"
        line = stream.readline()
        assert stream.readline() == b"</script>\r\n"
        assert line.startswith(b"p(") and line.endswith(b");\n") and b"<" not in line
        got += ddp_messages(json.loads(line[2:-3]))
    assert results(got) == [["</script><b>"]]
    stream.close()


def test_jsonp_polling_and_jsonp_send(server):
    s = Session(server.port)
    assert s.request("GET", "jsonp")[::2] == (500, b'"callback" parameter required')
    status, headers, body = s.request("GET", "jsonp", query="c=cb")
    assert (status, body) == (200, b'/**/cb("o");\r\n')
    assert headers["X-Content-Type-Options"] == "nosniff"
    form = "d=" + urllib.parse.quote(json.dumps([json.dumps(CONNECT)]))
    status, headers, body = s.request("POST", "jsonp_send", form,
                                      {"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, body) == (200, b"ok")
    status, _, body = s.request("GET", "jsonp", query="callback=cb")
    assert body.startswith(b'/**/cb("a[') and body.endswith(b'");\r\n')
    assert ddp_messages(json.loads(body[7:-4]))[0]["msg"] == "connected"
    # text/plain: the JSON array itself
    call = json.dumps([json.dumps({"msg": "method", "method": "echo", "params": [1], "id": "1"})])
    assert s.request("POST", "jsonp_send", call, {"Content-Type": "text/plain"})[::2] == (200, b"ok")
    assert s.request("POST", "jsonp_send", "d=", {"Content-Type": "application/x-www-form-urlencoded"}
                     )[::2] == (500, b"Payload expected.")
    assert s.request("POST", "jsonp_send", "d=%5B", {"Content-Type": "application/x-www-form-urlencoded"}
                     )[::2] == (500, b"Broken JSON encoding.")
    status, _, body = s.request("GET", "jsonp", query="c=cb")
    assert [m["msg"] for m in ddp_messages(json.loads(body[7:-4]))] == ["updated", "result"]
    assert results(ddp_messages(json.loads(body[7:-4]))) == [[1]]


@pytest.mark.parametrize("path", ["/sockjs/iframe.html", "/sockjs/iframe-1.6.1.min.html"])
def test_iframe_page_is_cached_with_an_etag(server, path):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200 and response.headers["Content-Type"] == "text/html; charset=UTF-8"
    assert b"SockJS.bootstrap_iframe()" in body and b"<script src=\"https://" in body
    assert response.headers["Cache-Control"] == "public, max-age=31536000"
    etag = response.headers["ETag"]
    conn.request("GET", path, headers={"If-None-Match": etag})
    response = conn.getresponse()
    assert response.status == 304 and response.read() == b""
    conn.close()


def test_messages_sent_while_no_receiver_is_attached_arrive_in_order(server, sql):
    s = Session(server.port)
    s.connect()
    s.send({"msg": "sub", "id": "g", "name": "AllGenres", "params": []})
    got = s.messages(1, timeout=15)
    while got[-1].get("msg") != "ready":
        got += s.messages(1)
    name = f"detached {uuid.uuid4().hex[:8]}"
    # no poll open: calls, and a change made elsewhere, wait for the next poll
    s.send(*[{"msg": "method", "method": "echo", "params": [i], "id": str(i)} for i in range(20)])
    sql("INSERT INTO bookstore_genre (name) VALUES (%s)", [name])
    time.sleep(0.5)
    got = []
    while len(results(got)) < 20 or not any(m.get("msg") == "added" for m in got):
        got += s.messages(1)
    assert results(got) == [[i] for i in range(20)]
    assert [m["fields"]["name"] for m in got if m.get("msg") == "added"] == [name]


def test_session_timeout_ends_the_connection_and_its_subscriptions(start_server, ddpctl):
    live = start_server("--sockjs-disconnect-delay", "1", "--node-heartbeat", "0.2",
                        "--sockjs-heartbeat", "0.3")
    s = Session(live.port)
    session = s.connect()
    s.send({"msg": "sub", "id": "g", "name": "AllGenres", "params": []})
    while "ready" not in [m["msg"] for m in s.messages(1)]:
        pass
    polling = threading.Event()
    polling.set()

    def poll():  # the client keeps polling (each poll ends with a heartbeat at the latest)
        while polling.is_set():
            s.poll()

    poller = threading.Thread(target=poll)
    poller.start()

    def listed():
        conns = json.loads(ddpctl("conns", "ls", "--json").stdout)
        subs = json.loads(ddpctl("subs", "ls", "--json").stdout)
        return ([(c["transport"], c["remote_address"]) for c in conns if c["id"] == session],
                [x["publication"] for x in subs if x["connection"] == session])

    try:
        time.sleep(1.5)  # longer than the disconnect delay, but the client polls
        eventually(lambda: listed() == ([("sockjs/xhr-polling", "127.0.0.1")], ["AllGenres"]))
    finally:
        polling.clear()
        poller.join()
    # no request for longer than the disconnect delay: the session and its DDP connection end
    eventually(lambda: listed() == ([], []), timeout=20)
    assert s.request("POST", "xhr_send", '["x"]')[0] == 404
    assert s.poll() == "o"  # a new session under that id


def test_client_gone_mid_stream_ends_the_session(start_server):
    live = start_server("--sockjs-heartbeat", "0.2")
    s = Session(live.port)
    stream = s.open("POST", "xhr_streaming")
    stream.read_exactly(2049)
    assert read_frame(stream) == "o"
    s.send(CONNECT)
    stream.close()  # the next heartbeat cannot be written: the session ends at once
    eventually(lambda: s.request("POST", "xhr_send", '["x"]')[0] == 404, timeout=10)


def test_heartbeats_on_streaming_and_polling_receivers(start_server):
    live = start_server("--sockjs-heartbeat", "0.3")
    s = Session(live.port)
    stream = s.open("POST", "xhr_streaming")
    stream.read_exactly(2049)
    assert read_frame(stream) == "o"
    s.send(CONNECT)
    frames = [read_frame(stream) for _ in range(4)]
    assert "h" in frames and any(f.startswith("a[") for f in frames)
    stream.close()
    p = Session(live.port)
    p.connect()
    assert p.poll() == "h"  # an idle poll ends with a heartbeat


def test_oversized_message_closes_the_session_with_1009(start_server):
    live = start_server("--max-frame-size", "4096")
    s = Session(live.port)
    s.connect()
    s.send({"msg": "method", "method": "echo", "params": ["y" * 3000], "id": "1"})
    assert results(s.messages(2)) == [["y" * 3000]]
    status, _, _ = s.request("POST", "xhr_send", json.dumps([json.dumps({"msg": "method", "method": "echo",
                                                                       "params": ["x" * 5000], "id": "2"})]))
    assert status == 413
    assert s.poll() == 'c[1009,"Message too big"]'
    assert s.poll() == 'c[1009,"Message too big"]'  # every receiver until the session expires
    assert s.request("POST", "xhr_send", '["x"]')[0] == 204  # accepted, ignored (sockjs-node)
    # the limit is per message: a send of several messages under it is fine
    t = Session(live.port)
    t.connect()
    t.send(*[{"msg": "method", "method": "echo", "params": ["z" * 3000], "id": str(i)} for i in range(3)])
    assert results(t.messages(6)) == [["z" * 3000]] * 3


def test_send_buffer_limit_applies_while_no_receiver_is_attached(start_server, sql):
    live = start_server("--send-buffer-limit", "64K")
    s = Session(live.port)
    s.connect()
    s.send({"msg": "sub", "id": "g", "name": "AllGenres", "params": []})
    while "ready" not in [m["msg"] for m in s.messages(1)]:
        pass
    tag = uuid.uuid4().hex[:8]
    sql("INSERT INTO bookstore_genre (name) SELECT %s || ' ' || i || repeat('x', 60) "
        "FROM generate_series(1, 2000) i", [tag])
    time.sleep(1)
    frames = [s.poll() for _ in range(3)]
    assert 'c[1008,"send buffer limit exceeded"]' in frames, [f[:80] for f in frames]


def test_jsessionid_cookie_when_asked_for(start_server):
    live = start_server("--sockjs-jsessionid")
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=5)
    conn.request("GET", "/sockjs/info")
    response = conn.getresponse()
    assert json.loads(response.read())["cookie_needed"] is True
    s = Session(live.port)
    assert s.request("POST", "xhr")[1]["Set-Cookie"] == "JSESSIONID=dummy; path=/"
    headers = s.request("POST", "xhr_send", "[]", {"Cookie": "a=b; JSESSIONID=node7"})[1]
    assert headers["Set-Cookie"] == "JSESSIONID=node7; path=/"


def test_shutdown_closes_sessions_with_1001(start_server):
    live = start_server()
    s = Session(live.port)
    stream = s.open("POST", "xhr_streaming")
    stream.read_exactly(2049)
    assert read_frame(stream) == "o"
    s.send(CONNECT)
    assert ddp_messages(read_frame(stream))[0]["msg"] == "connected"
    live.process.send_signal(signal.SIGTERM)
    assert read_frame(stream) == 'c[1001,"Server shutting down"]'
    assert live.process.wait(15) == 0


def test_shutdown_hands_a_waiting_poll_1001_and_refuses_new_connections(start_server):
    """At SIGTERM a poll waiting for data gets ``c[1001,...]`` at once; the listening socket
    is closed (a new poll is refused: the client reconnects elsewhere) and the process ends."""
    live = start_server()
    s = Session(live.port)
    assert s.poll() == "o"
    s.send(CONNECT)
    assert ddp_messages(s.poll())[0]["msg"] == "connected"
    waiting = {}

    def wait_poll():
        waiting["frame"] = s.poll()

    poller = threading.Thread(target=wait_poll)
    poller.start()
    time.sleep(0.5)  # the poll is attached to the session, waiting
    live.process.send_signal(signal.SIGTERM)
    poller.join(15)
    assert waiting["frame"] == 'c[1001,"Server shutting down"]'
    assert live.process.wait(15) == 0
    with pytest.raises(OSError):
        Session(live.port).poll()


@pytest.mark.parametrize("method,transport,query", [("POST", "xhr", ""), ("POST", "xhr_streaming", ""),
                                                    ("GET", "eventsource", ""), ("GET", "jsonp", "c=cb"),
                                                    ("GET", "htmlfile", "c=cb")])
def test_client_gone_from_a_waiting_receiver_ends_the_session_before_any_write(start_server, method,
                                                                             transport, query):
    # A receiver waiting for frames (nothing to write, the next heartbeat 45 s away) whose
    # client closes its connection: the session ends at once (sockjs-node's didAbort on the
    # request's 'close'), so the client's next receiver opens a new session instead of
    # getting c[2010] from the dead one until a write to it fails.  No heartbeats: no write.
    server = start_server("--heartbeat-interval", "0", "--sockjs-heartbeat", "0")
    s = Session(server.port)
    s.connect()
    waiting = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    target = f"{s.path}/{transport}" + (f"?{query}" if query else "")
    waiting.sendall(f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n".encode())
    if transport == "xhr" or transport == "jsonp":
        # a poll answers (headers and all) with its frame: nothing to read before that
        eventually(lambda: s.request("POST", "xhr", headers={"Content-Length": "0"})[2]
                   == b'c[2010,"Another connection still open"]\n', timeout=10)
    else:
        assert waiting.recv(1)  # the response started: the receiver is attached
    waiting.close()
    eventually(lambda: s.request("POST", "xhr_send", '["x"]')[0] == 404, timeout=10)
    assert s.poll() == "o"  # a new session under that id


def _poll_request(path):
    return f"POST {path}/xhr HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n".encode()


def test_client_gone_from_a_waiting_poll_over_tls_ends_the_session(start_server, tmp_path):
    # Through TLS too: the client's close (with or without close_notify) is seen while the
    # poll waits.
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server = start_server("--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
                          "--heartbeat-interval", "0", "--sockjs-heartbeat", "0")
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False

    def tls_poll(path, wait=True):
        sock = context.wrap_socket(socket.create_connection(("127.0.0.1", server.port), timeout=15),
                                   server_hostname="127.0.0.1")
        sock.sendall(_poll_request(path))
        if not wait:
            return sock
        data = b""
        while not data.endswith(b"\r\n0\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        sock.close()
        return data.split(b"\r\n\r\n", 1)[1]

    for close_notify in (False, True):
        path = f"/sockjs/000/{uuid.uuid4().hex}"
        assert b"\r\no\n\r\n" in tls_poll(path)
        waiting = tls_poll(path, wait=False)
        eventually(lambda path=path: b"2010" in tls_poll(path), timeout=10)  # the waiting poll is attached
        if close_notify:
            waiting.settimeout(2)
            with contextlib.suppress(OSError):
                waiting.unwrap()  # sends close_notify (the server does not answer it)
        waiting.close()
        eventually(lambda path=path: b"\r\no\n\r\n" in tls_poll(path), timeout=10)  # a new session


def test_a_request_pipelined_behind_a_waiting_receiver_is_answered_after_it(server):
    s = Session(server.port)
    s.connect()
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(_poll_request(s.path) + b"GET /sockjs/info HTTP/1.1\r\nHost: localhost\r\n\r\n")
        time.sleep(0.5)  # the poll waits, the next request is in the server's hands
        s.send({"msg": "sub", "id": "x", "name": "no-such-publication"})
        data = b""
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"\r\n0\r\n\r\n") \
                and not data.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        assert b"nosub" in data and b'"websocket":true' in data
        assert data.index(b"nosub") < data.index(b'"websocket":true')
        # and the connection is still good for a request sent after those answers
        sock.sendall(b"GET /sockjs/info HTTP/1.1\r\nHost: localhost\r\n\r\n")
        more = b""
        while not more.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, more
            more += chunk
        assert more.startswith(b"HTTP/1.1 200")


def test_sessions_beyond_the_limit_get_503_until_one_ends(start_server):
    """``--max-sockjs-sessions`` bounds the sessions over HTTP (a flood of session ids cannot
    grow the process without bound); WebSocket clients are not counted."""
    live = start_server("--max-sockjs-sessions", "3", "--sockjs-disconnect-delay", "1")
    sessions = [Session(live.port) for _ in range(3)]
    for s in sessions:
        assert s.poll() == "o"
    status, _, body = Session(live.port).request("POST", "xhr")
    assert (status, body) == (503, b"Too many SockJS sessions\n")
    # the open ones go on
    assert sessions[0].request("POST", "xhr_send", json.dumps([json.dumps(CONNECT)]))[0] == 204
    # sessions whose client stopped polling end after the disconnect delay; new ones are served again
    eventually(lambda: Session(live.port).request("POST", "xhr")[0] == 200, timeout=15)
