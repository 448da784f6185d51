"""Connection hooks (Meteor.onConnection / connection.onClose) and per-connection storage.

The hooks of tests/testapp/ddp.py act only for clients sending ``X-Test-Hooks``: they store
the ``X-Test-Tenant`` header and a database count in ``connection.data`` and register an
``on_close`` callback that logs ``hook: connection <id> closed``.
"""
import signal
import socket

import pytest
import websocket
from conftest import eventually

from ddpctl.api import on_connection
from ddpctl.connection_hooks import connection_hooks
from ddpctl.invocation import ConnectionHandle
from ddpctl.testing import DDPClient

BEAT = "0.5"
NOTE = "testapp.tenantnote"


def hooked(url, mode="on", tenant="t1", **options):
    return DDPClient(url, header=[f"X-Test-Hooks: {mode}", f"X-Test-Tenant: {tenant}"], **options)


def closed_count(live, session):
    return live.output().count(f"hook: connection {session} closed")


@pytest.fixture
def authors(sql, clean):
    sql("INSERT INTO bookstore_author (name, email) VALUES ('A', 'a@example.com'), ('B', 'b@example.com')")
    sql("DELETE FROM testapp_tenantnote")
    yield 2
    sql("DELETE FROM testapp_tenantnote")


# -- in process -------------------------------------------------------------------------

def test_hooks_run_in_order_errors_are_logged_and_stop_unregisters(caplog):
    seen = []
    first = on_connection(lambda c: seen.append(("first", c.id)))

    @on_connection
    def broken(connection):
        raise RuntimeError("boom")

    last = on_connection(lambda c: seen.append(("last", c.id)))
    try:
        handle = ConnectionHandle("abc", None, {})
        connection_hooks.run(handle)
        assert seen == [("first", "abc"), ("last", "abc")]
        assert "Exception in on_connection hook" in caplog.text and "boom" in caplog.text
        broken.stop()
        broken.stop()  # idempotent
        first.stop()
        seen.clear()
        connection_hooks.run(handle)
        assert seen == [("last", "abc")]
    finally:
        for hook in (first, broken, last):
            hook.stop()
    with pytest.raises(TypeError):
        on_connection("not callable")


def test_close_callbacks_run_once_in_order_and_late_ones_at_once(caplog):
    calls = []
    handle = ConnectionHandle("abc", None, {})
    handle.on_close(lambda: calls.append(1))
    handle.on_close(lambda: 1 / 0)
    handle.on_close(lambda: calls.append(3))
    assert not handle.closed
    handle.run_close_callbacks()
    handle.run_close_callbacks()
    assert calls == [1, 3] and handle.closed
    assert "Exception in on_close callback" in caplog.text and "ZeroDivisionError" in caplog.text
    handle.on_close(lambda: calls.append(4))  # already closed: runs now
    assert calls == [1, 3, 4]


# -- live servers ---------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["raw", "sockjs"])
def test_hook_storage_is_visible_from_methods_and_publications(server, sql, authors, transport):
    url = server.ws_url if transport == "raw" else server.sockjs_url
    sql("INSERT INTO testapp_tenantnote (tenant, text) VALUES ('t1', 'mine'), ('t2', 'theirs')")
    with hooked(url, tenant="t1") as client, DDPClient(url) as plain:
        session = client.connect()
        plain.connect()
        data = {"tenant": "t1", "authors": authors, "second": True}
        assert client.call("connection_data") == data
        assert plain.call("connection_data") == {}  # the hooks left it alone: nothing stored
        client.subscribe("connection_data")
        assert client.collections["connection_data"] == {session: data}
        client.subscribe("NotesOfConnectionTenant")
        assert [n["text"] for n in client.collections[NOTE].values()] == ["mine"]
        plain.subscribe("NotesOfConnectionTenant")
        assert NOTE not in plain.collections  # its data has no tenant: "?"


def test_a_failing_hook_is_logged_and_the_connection_lives_on(server, authors):
    with hooked(server.ws_url, mode="crash") as client:
        client.connect()
        assert client.call("echo", "alive") == ["alive"]
        assert client.call("connection_data") == {"second": True}  # the next hook still ran
    assert "Exception in on_connection hook" in server.output()
    assert "deliberate failure in an on_connection hook" in server.output()


def test_on_close_runs_exactly_once_whatever_ends_the_connection(start_server, authors, ddpctl):
    live = start_server("--node-heartbeat", BEAT)
    ended = {}

    # The client closes (a WebSocket close frame).
    client = hooked(live.ws_url)
    ended["client close"] = client.connect()
    client.close()

    # The client vanishes without a close frame (SockJS this time).
    client = hooked(live.sockjs_url)
    ended["client vanishes"] = client.connect()
    client.ws.sock.shutdown(socket.SHUT_RDWR)
    client.ws.sock.close()

    # A method closes its own connection (ConnectionHandle.close).
    with hooked(live.ws_url) as client:
        ended["connection.close()"] = client.connect()
        client.send({"msg": "method", "method": "close_my_connection", "params": [], "id": "1"})
        with pytest.raises((websocket.WebSocketException, OSError)):
            while True:
                client.recv()

    # The operator closes it.
    with hooked(live.ws_url) as client:
        ended["ddpctl conns close"] = session = client.connect()
        eventually(lambda: ddpctl("conns", "close", session, check=False).returncode == 0)
        with pytest.raises((websocket.WebSocketException, OSError)):
            while True:
                client.recv()

    # A failing close callback does not keep the next one from running.
    with hooked(live.ws_url, mode="crash-on-close") as client:
        ended["failing callback first"] = client.connect()
    for session in ended.values():
        eventually(lambda session=session: closed_count(live, session) >= 1)

    # The server shuts down: the callbacks of its open connections run before it exits.
    survivors = [hooked(live.ws_url), hooked(live.sockjs_url)]
    for n, client in enumerate(survivors):
        ended[f"server shutdown {n}"] = client.connect()
    live.process.send_signal(signal.SIGTERM)
    assert live.process.wait(15) == 0
    for client in survivors:
        client.close()

    counts = {way: closed_count(live, session) for way, session in ended.items()}
    assert counts == dict.fromkeys(ended, 1), live.output()[-3000:]
    assert "Exception in on_close callback" in live.output()


def test_on_close_runs_once_after_a_heartbeat_timeout(start_server, authors):
    live = start_server("--heartbeat-interval", "0.3", "--heartbeat-timeout", "0.3")
    with hooked(live.ws_url, auto_pong=False) as client:
        session = client.connect()
        assert client.recv() == {"msg": "ping"}
        with pytest.raises((websocket.WebSocketException, OSError)):  # no pong: closed
            while True:
                client.recv()
    eventually(lambda: closed_count(live, session) == 1)
    live.stop()
    assert closed_count(live, session) == 1
