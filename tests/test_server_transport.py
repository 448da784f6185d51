"""HTTP routing, WebSocket limits, heartbeats, TLS and graceful shutdown of ``ddpctl serve``."""
import json
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest
import websocket

from ddpctl.testing import DDPClient


def http_get(url, **kwargs):
    with urllib.request.urlopen(url, timeout=5, **kwargs) as response:
        return response.status, dict(response.headers), response.read()


def test_django_site_is_served(server):
    status, _, body = http_get(server.url + "/django/")
    assert status == 200 and b"<h1>Bookstore</h1>" in body and b"<!DOCTYPE" not in body


def test_sockjs_info_and_welcome(server):
    status, headers, body = http_get(server.url + "/sockjs/info")
    info = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json; charset=UTF-8"
    assert info["websocket"] is True and info["cookie_needed"] is False and info["origins"] == ["*:*"]
    assert isinstance(info["entropy"], int)
    assert "no-cache" in headers["Cache-Control"]
    assert http_get(server.url + "/sockjs")[2] == b"Welcome to SockJS!\n"


def test_websocket_path_without_upgrade_is_400(server):
    with pytest.raises(urllib.error.HTTPError) as info:
        http_get(server.url + "/websocket")
    assert info.value.code == 400


@pytest.mark.parametrize("path", ["/websocket", "/websocket/", "/sockjs/websocket"])
def test_raw_websocket_paths(server, path):
    with DDPClient(f"ws://127.0.0.1:{server.port}{path}") as client:
        assert len(client.connect()) == 17


def test_oversized_frame_closes_with_1009_and_server_lives_on(start_server):
    live = start_server("--max-frame-size", "4096")
    ws = websocket.create_connection(live.ws_url, timeout=5)
    ws.send(json.dumps({"msg": "connect", "version": "1", "support": ["1"]}))
    json.loads(ws.recv())
    ws.send(json.dumps({"msg": "method", "method": "echo", "id": "1", "params": ["x" * 5000]}))
    opcode, data = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(data[:2], "big") == 1009
    ws.close()
    with DDPClient(live.ws_url) as client:  # a frame under the limit is fine
        client.connect()
        assert client.call("echo", "y" * 3000) == ["y" * 3000]


def test_server_pings_idle_clients_and_closes_silent_ones(start_server):
    live = start_server("--heartbeat-interval", "0.3", "--heartbeat-timeout", "0.3")
    with DDPClient(live.ws_url, auto_pong=False) as client:
        client.connect()
        assert client.recv() == {"msg": "ping"}
        start = time.monotonic()
        with pytest.raises((websocket.WebSocketException, OSError)):  # no pong: the server closes the socket
            while True:
                client.recv()
        assert time.monotonic() - start < 3


def test_any_message_counts_as_pong(start_server):
    live = start_server("--heartbeat-interval", "0.3", "--heartbeat-timeout", "0.3")
    with DDPClient(live.ws_url, auto_pong=False) as client:
        client.connect()
        for i in range(8):  # 2.4 s of chatter: longer than interval + timeout
            assert client.call("echo", i) == [i]
            time.sleep(0.3)


def test_heartbeats_keep_a_ponging_client(start_server):
    live = start_server("--heartbeat-interval", "0.2", "--heartbeat-timeout", "0.2")
    with DDPClient(live.ws_url, auto_pong=False) as client:
        client.connect()
        pings = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert client.recv() == {"msg": "ping"}
            pings += 1
            client.send({"msg": "pong"})
        assert pings >= 2
        assert client.call("echo", "alive") == ["alive"]


def test_sigterm_closes_websockets_with_1001_and_exits_0(start_server):
    live = start_server()
    clients = [DDPClient(live.ws_url) for _ in range(3)] + [DDPClient(live.sockjs_url)]
    for c in clients:
        c.connect()
    started = time.monotonic()
    live.process.send_signal(signal.SIGTERM)
    for c in clients[:3]:
        opcode, data = c.ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(data[:2], "big") == 1001
    assert clients[3].ws.recv() == 'c[1001,"Server shutting down"]'
    assert live.process.wait(10) == 0
    assert time.monotonic() - started < 5
    for c in clients:
        c.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", live.port), timeout=1)


def test_sigint_also_shuts_down_gracefully(start_server):
    live = start_server()
    live.process.send_signal(signal.SIGINT)
    assert live.process.wait(10) == 0


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_tls(start_server, certificate):
    cert, key = certificate
    live = start_server("--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    status, _, body = http_get(f"https://127.0.0.1:{live.port}/sockjs/info", context=context)
    assert status == 200
    with DDPClient(f"wss://127.0.0.1:{live.port}/websocket",
                   sslopt={"ca_certs": str(cert), "check_hostname": False}) as client:
        client.connect()
        assert client.call("echo", "secure") == ["secure"]


def test_sockjs_heartbeat_frames(start_server):
    live = start_server("--sockjs-heartbeat", "0.2")
    with DDPClient(live.sockjs_url) as client:
        assert client.ws.recv() == "h"


def test_database_connections_are_bounded_and_queries_do_not_block_the_process(
        start_server, live_database_url):
    import select

    import psycopg2
    live = start_server("--db-connections", "2")
    name = urllib.parse.urlsplit(live_database_url).path.lstrip("/")
    clients = [DDPClient(live.ws_url) for _ in range(6)]
    seen = []  # pg_sleep statements active at each sample, from before the calls to their end
    done = threading.Event()

    def sample():
        # autocommit, and no ``with admin``: inside one transaction (which psycopg2's ``with``
        # opens even in autocommit) pg_stat_activity is one snapshot, taken at the first sample
        admin = psycopg2.connect(live_database_url)
        admin.autocommit = True
        try:
            with admin.cursor() as cur:
                while not done.is_set():
                    cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                                " AND state = 'active' AND query LIKE 'SELECT pg_sleep%%'", [name])
                    seen.append(cur.fetchone()[0])
                    time.sleep(0.02)
        finally:
            admin.close()

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        for c in clients:
            c.connect()
        sampler.start()
        for c in clients:  # six 1 s queries at once, two connections
            c.send({"msg": "method", "method": "pg_sleep", "id": "s", "params": [1.0]})
        with DDPClient(live.ws_url) as probe:
            probe.connect()
            probe.send({"msg": "ping", "id": "p"})
            assert probe.recv() == {"msg": "pong", "id": "p"}
        # The pong came while queries run: psycopg2 waits on the gevent hub, not the process.
        assert not any(select.select([c.ws.sock], [], [], 0)[0] for c in clients)
        for c in clients:
            replies = [c.recv(), c.recv()]
            assert {"msg": "result", "id": "s", "result": 1.0} in replies
        done.set()
        sampler.join(10)
        assert 1 <= max(seen) <= 2, seen
    finally:
        done.set()
        for c in clients:
            c.close()
