"""``ddpctl top`` against two real ``ddpctl serve`` processes on one database: ``--json``,
the live screen under a pseudo-terminal (``q`` and Ctrl-C quit), and the registry standing
in for a node that does not answer."""
import contextlib
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import threading
import time

import pytest
from conftest import SERVER_ARGS, eventually
from test_live_data import insert_book
from test_operator import BEAT, node_ids

from ddpctl.testing import DDPClient

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")


@pytest.fixture
def two_nodes(start_server, clean):
    return start_server("--node-heartbeat", BEAT), start_server("--node-heartbeat", BEAT)


def top_json(ddpctl, *args):
    return json.loads(ddpctl("top", "--json", *args).stdout)


def test_top_json_shows_both_nodes_their_counters_rates_and_publications(two_nodes, ddpctl, sql):
    a, b = two_nodes
    ids = node_ids(ddpctl, a, b)
    with DDPClient(a.ws_url) as c1, DDPClient(b.ws_url) as c2, DDPClient(b.sockjs_url) as c3:
        for c in (c1, c2, c3):
            c.connect()
        c1.subscribe("AllBooks")
        c2.subscribe("AllBooks")
        c3.subscribe("AllGenres")
        stop = threading.Event()

        def write():  # changes while top takes its two readings: messages/s must show them
            while not stop.is_set():
                insert_book(sql, "Traffic")
                time.sleep(0.05)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            view = top_json(ddpctl, "--interval", "1")
        finally:
            stop.set()
            writer.join()
    nodes = {n["node"]: n for n in view["nodes"]}
    node_a, node_b = nodes[ids[a.process.pid]], nodes[ids[b.process.pid]]
    assert node_a["source"] == node_b["source"] == "node"
    assert (node_a["pid"], node_b["pid"]) == (a.process.pid, b.process.pid)
    assert (node_a["connections"], node_b["connections"]) == (1, 2)
    assert (node_a["subscriptions"], node_b["subscriptions"]) == (1, 2)
    assert (node_a["observers"], node_b["observers"]) == (1, 2)
    for node in (node_a, node_b):
        assert node["messages_per_second"] > 0  # the inserts reached AllBooks on both
        assert node["changes_per_second"] > 0
        assert node["ready"] is True and node["lag_seconds"] < 10
        assert node["position"] > 0
    pubs = {p["publication"]: p for p in view["publications"]}
    assert pubs["AllBooks"]["subscriptions"] == 2 and pubs["AllBooks"]["observers"] == 2
    assert pubs["AllBooks"]["messages_per_second"] > 0
    assert pubs["AllGenres"]["subscriptions"] == 1
    assert view["publications"][0]["publication"] == "AllBooks"  # the busiest first
    assert view["totals"]["connections"] >= 3
    assert 0.9 <= view["interval"] < 5


def test_a_node_that_does_not_answer_is_shown_from_the_registry(start_server, clean, ddpctl):
    a = start_server("--node-heartbeat", "2")  # a stopped node's row stays live 6 s
    b = start_server("--node-heartbeat", "2")
    ids = node_ids(ddpctl, a, b)
    with DDPClient(b.ws_url) as client:
        client.connect()
        eventually(lambda: {n["id"]: n["connections"] for n in json.loads(
            ddpctl("nodes", "ls", "--json").stdout)}.get(ids[b.process.pid]) == 1)
        os.kill(b.process.pid, signal.SIGSTOP)
        try:
            view = top_json(ddpctl, "--interval", "0.3", "--timeout", "0.3")
        finally:
            os.kill(b.process.pid, signal.SIGCONT)
    nodes = {n["node"]: n for n in view["nodes"]}
    assert nodes[ids[a.process.pid]]["source"] == "node"
    stopped = nodes[ids[b.process.pid]]
    assert stopped["source"] == "registry"
    assert stopped["connections"] == 1  # from its last heartbeat
    assert stopped["messages_per_second"] is None and stopped["lag_seconds"] is None


def _spawn_top(live_database_url, *args):
    """``ddpctl top`` on a pseudo-terminal (its controlling terminal, as in a shell); (pid, fd)."""
    env = {**os.environ, "DATABASE_URL": live_database_url, "TERM": "xterm-256color", "COLUMNS": "200",
           "LINES": "50"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once
        os.execvpe(sys.executable, [sys.executable, "-m", "ddpctl", "top", *args, *SERVER_ARGS], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    return pid, fd


def _read_until(fd, predicate, timeout=30.0):
    """Read the terminal until ``predicate(text)`` holds for the text so far (escapes removed)."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                out += os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
        text = _ANSI.sub("", out.decode("utf-8", "replace"))
        if predicate(text):
            return text
    screen = _ANSI.sub("", out.decode("utf-8", "replace"))[-3000:]
    raise AssertionError(f"not seen within {timeout} s; the screen: {screen}")


def _exit_code(pid, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("ddpctl top did not exit")


@pytest.mark.parametrize("key", [b"q", b"\x03"], ids=["q", "ctrl-c"])
def test_top_on_a_terminal_shows_both_nodes_and_quits(two_nodes, ddpctl, live_database_url, key):
    a, b = two_nodes
    ids = node_ids(ddpctl, a, b)
    with DDPClient(a.ws_url) as client:
        client.connect()
        client.subscribe("AllBooks")
        pid, fd = _spawn_top(live_database_url, "--interval", "0.5")
        try:
            # Both nodes on screen, the second refresh included (rates need two readings).
            text = _read_until(fd, lambda t: all(i in t for i in ids.values()) and "AllBooks" in t
                               and t.count("q quits") >= 2)
            assert "busiest publications" in text
            os.write(fd, key)
            assert _exit_code(pid) == 0
        finally:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            os.close(fd)
