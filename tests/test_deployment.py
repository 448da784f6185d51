"""The deployment files of deploy/ work as docs/deployment.rst says: nginx and Caddy, as
shipped (ports and certificate swapped for the test's), in front of two real ``ddpctl serve``
processes; the container entry point against a real database; the systemd unit's settings."""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from unittest import mock

import pytest
from conftest import PYTHONPATH_ARGS, ROOT, empty_database, eventually

from ddpctl.commands.serve import serve
from ddpctl.testing import DDPClient, free_port

DEPLOY = ROOT / "deploy"
CLIENT_ADDRESS = "127.0.0.2"  # the test client's source address: the proxies connect from 127.0.0.1


def wait_listening(port: int, process: subprocess.Popen, log: Path) -> None:
    def up():
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode}:\n{log.read_text() if log.exists() else ''}")
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0
    eventually(up, timeout=30)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def backends(start_server):
    """Two ddpctl serve processes, as behind one proxy."""
    return [start_server("--forwarded-count", "1") for _ in range(2)]


def client_socket(port: int, tls: bool) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(CLIENT_ADDRESS, 0))
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(sock, server_hostname="localhost")
    return sock


def whoami_over_websocket(port: int, tls: bool, path: str = "/websocket") -> dict:
    scheme = "wss" if tls else "ws"
    with DDPClient(f"{scheme}://127.0.0.1:{port}{path}", socket=client_socket(port, tls),
                   header=["X-Forwarded-For: 198.51.100.7"]) as client:  # a spoof: never believed
        client.connect()
        return client.call("whoami")


class SockJSOverHTTP:
    """A SockJS xhr-polling session, each request on a new TCP connection (as browsers may)."""

    def __init__(self, port: int, tls: bool) -> None:
        self.port, self.tls = port, tls
        self.base = f"/sockjs/{uuid.uuid4().int % 1000:03d}/{uuid.uuid4().hex[:8]}"
        self.cookies: dict[str, str] = {}
        self.statuses: list[int] = []

    def request(self, what: str, body: str = "") -> str:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        connection.sock = client_socket(self.port, self.tls)
        headers = {"Content-Type": "text/plain"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        connection.request("POST", f"{self.base}/{what}", body=body, headers=headers)
        response = connection.getresponse()
        text = response.read().decode()
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            self.cookies[name.strip()] = rest.split(";")[0]
        self.statuses.append(response.status)
        connection.close()
        return text

    def send(self, message: dict) -> None:
        assert self.request("xhr_send", json.dumps([json.dumps(message)])) == ""

    def receive(self, predicate) -> dict:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            frame = self.request("xhr").strip()
            if frame.startswith("a"):
                for text in json.loads(frame[1:]):
                    message = json.loads(text)
                    if predicate(message):
                        return message
        raise AssertionError("no such message")


def whoami_over_sockjs_polling(port: int, tls: bool) -> tuple[dict, list[int]]:
    session = SockJSOverHTTP(port, tls)
    assert session.request("xhr").strip() == "o"
    session.send({"msg": "connect", "version": "1", "support": ["1"]})
    session.receive(lambda m: m.get("msg") == "connected")
    results = []
    for n in range(3):
        session.send({"msg": "method", "method": "whoami", "params": [], "id": str(n)})
        results.append(session.receive(lambda m, n=n: m.get("msg") == "result" and m["id"] == str(n)))
    assert all(r["result"] == results[0]["result"] for r in results)
    return results[0]["result"], session.statuses


def assert_through_the_proxy(port: int, tls: bool) -> None:
    assert whoami_over_websocket(port, tls)["address"] == CLIENT_ADDRESS
    assert whoami_over_websocket(port, tls, "/sockjs/websocket")["address"] == CLIENT_ADDRESS
    for _ in range(6):  # sessions over HTTP land on either process and stay there
        result, statuses = whoami_over_sockjs_polling(port, tls)
        assert result["address"] == CLIENT_ADDRESS
        assert set(statuses) <= {200, 204}, statuses


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_conf_in_front_of_two_processes(backends, tmp_path):
    port, redirect_port = free_port(), free_port()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True)
    conf = (DEPLOY / "nginx.conf").read_text()
    for old, new in [("server 127.0.0.1:8001;", f"server 127.0.0.1:{backends[0].port};"),
                     ("server 127.0.0.1:8002;", f"server 127.0.0.1:{backends[1].port};"),
                     ("listen 80;", f"listen 127.0.0.1:{redirect_port};"),
                     ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
                     ("/etc/letsencrypt/live/app.example.com/fullchain.pem", str(tmp_path / "cert.pem")),
                     ("/etc/letsencrypt/live/app.example.com/privkey.pem", str(tmp_path / "key.pem"))]:
        assert old in conf, old
        conf = conf.replace(old, new)
    conf = re.sub(r"\n\s*listen \[::\]:\d+( ssl)?;", "", conf)
    (tmp_path / "ddpctl.conf").write_text(conf)
    temp = {name: tmp_path / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    (tmp_path / "main.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log info;\nevents {{}}\nhttp {{\n"
        + "access_log off;\n"
        + "".join(f"{name}_temp_path {path};\n" for name, path in
                  [("client_body", temp["body"]), ("proxy", temp["proxy"]), ("fastcgi", temp["fastcgi"]),
                   ("uwsgi", temp["uwsgi"]), ("scgi", temp["scgi"])])
        + f"include {tmp_path}/ddpctl.conf;\n}}\n")
    nginx = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "main.conf"),
                              "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, nginx, tmp_path / "error.log")
        assert_through_the_proxy(port, tls=True)
        redirect = http.client.HTTPConnection("127.0.0.1", redirect_port, timeout=10)
        redirect.request("GET", "/books?x=1", headers={"Host": "app.example.com"})
        response = redirect.getresponse()
        assert response.status == 301 and response.headers["Location"] == "https://app.example.com/books?x=1"
    finally:
        stop(nginx)


@pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is not installed")
def test_caddyfile_in_front_of_two_processes(backends, tmp_path):
    port = free_port()
    conf = (DEPLOY / "Caddyfile").read_text()
    upstreams = f"127.0.0.1:{backends[0].port} 127.0.0.1:{backends[1].port}"
    site = f"{{\n\tadmin off\n\tauto_https off\n}}\n\nhttp://127.0.0.1:{port} {{"
    for old, new in [("app.example.com {", site), ("127.0.0.1:8001 127.0.0.1:8002", upstreams)]:
        assert old in conf, old
        conf = conf.replace(old, new)
    (tmp_path / "Caddyfile").write_text(conf)
    log = tmp_path / "caddy.log"
    env = {**os.environ, **{var: str(tmp_path) for var in ("HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME")}}
    with log.open("w") as out:
        caddy = subprocess.Popen(["caddy", "run", "--config", str(tmp_path / "Caddyfile"),
                                  "--adapter", "caddyfile"], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_listening(port, caddy, log)
        assert_through_the_proxy(port, tls=False)
    finally:
        stop(caddy)


def test_the_guide_shows_the_shipped_proxy_configurations():
    guide = (ROOT / "docs" / "deployment.rst").read_text()
    for name in ("nginx.conf", "Caddyfile"):
        shipped = {line.strip() for line in (DEPLOY / name).read_text().splitlines()}
        blocks = re.findall(r"\.\. code-block:: (?:nginx|text)\n\n((?:    .*\n|\n)+)", guide)
        shown = [line.strip() for block in blocks for line in block.splitlines() if line.strip()]
        in_block = [line for line in shown if line in shipped]
        assert len(in_block) >= 10, name
    for line in (line.strip() for block in re.findall(r"\.\. code-block:: nginx\n\n((?:    .*\n|\n)+)", guide)
                 for line in block.splitlines()):
        assert not line or line in {x.strip() for x in (DEPLOY / "nginx.conf").read_text().splitlines()}, line


@pytest.fixture
def database():
    with empty_database("ddpctl_entrypoint") as url:
        yield url


def test_container_entry_point_migrates_then_serves_and_stops_gracefully(database, tmp_path):
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database, "DDPCTL_SETTINGS": "test_settings",
           "DDPCTL_PYTHONPATH": os.pathsep.join(PYTHONPATH_ARGS[1::2]), "DDPCTL_LISTEN": f"127.0.0.1:{port}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    entrypoint = str(DEPLOY / "docker-entrypoint.sh")
    log = tmp_path / "out.log"
    with log.open("w") as out:
        process = subprocess.Popen([entrypoint, "--log-level", "debug"], env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        wait_listening(port, process, log)
        with DDPClient(f"ws://127.0.0.1:{port}/websocket") as client:
            client.connect()
            assert client.call("echo", 1, "a") == [1, "a"]
            process.send_signal(signal.SIGTERM)  # docker stop; the shell exec'd ddpctl: it gets it
            assert process.wait(30) == 0
    finally:
        stop(process)
    output = log.read_text()
    assert "Change capture installed on" in output  # migrate ran first, on the empty database
    assert "Traceback" not in output
    # Another command runs as given, without migrating.
    check = subprocess.run([entrypoint, "ddpctl", "migrate", "--check"], env=env, capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 0 and check.stdout.startswith("ok: migrations applied"), check.stderr


def test_dockerfile_copies_what_exists_and_sets_valid_options():
    text = (DEPLOY / "Dockerfile").read_text()
    for sources in re.findall(r"^COPY (.+) \S+$", text, re.MULTILINE):
        for source in sources.split():
            assert (ROOT / source).exists(), source
    assert os.access(DEPLOY / "docker-entrypoint.sh", os.X_OK)
    env = dict(re.findall(r"(DDPCTL_[A-Z_]+|DJANGO_[A-Z_]+)=(\"[^\"]*\"|\S+)", text))
    env = {k: v.strip('"') for k, v in env.items()}
    with mock.patch.dict(os.environ, env):
        params = serve.make_context("serve", []).params
    assert params["listen"] == [("0.0.0.0", 8000)] and params["forwarded_count"] == 1
    assert params["settings"] == "bookstore.settings"


def test_systemd_unit_settings_are_valid_options():
    text = (DEPLOY / "ddpctl.service").read_text()
    env = dict(re.findall(r"^Environment=(\w+)=(.*)$", text, re.MULTILINE))
    with mock.patch.dict(os.environ, env):
        params = serve.make_context("serve", []).params
    assert params["listen"] == [("127.0.0.1", 8000)] and params["forwarded_count"] == 1
    assert re.search(r"^KillSignal=SIGTERM$", text, re.MULTILINE)
    assert re.search(r"^ExecStart=\S+/ddpctl serve$", text, re.MULTILINE)
    stop_seconds = int(re.search(r"^TimeoutStopSec=(\d+)$", text, re.MULTILINE).group(1))
    assert stop_seconds > 5  # ddpctl's own shutdown takes up to 5 s
