"""User code never starves the system lane, and database connections stay within the budget.

Real ``ddpctl serve`` processes with a small ``--db-connections``.  Slow methods are made
to wait on something the test controls (an advisory lock, a file), so every assertion is
about order -- this happened while the slow calls were still outstanding -- not timing.
"""
import json
import os
import select
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import psycopg2
import pytest
from conftest import SERVER_ARGS, eventually
from test_live_data import books, insert_book, wait_for

from ddpctl.config import SYSTEM_CONNECTIONS
from ddpctl.testing import DDPClient

USER_CONNECTIONS = 2  # --db-connections in these tests
SLOW_CLIENTS = 4  # more slow calls than user connections



def nothing_received(clients):
    return not select.select([c.ws.sock for c in clients], [], [], 0)[0]


def results_of(client, ids):
    """Read until a ``result`` for every id in ``ids`` came; the results in arrival order."""
    results = []
    while len(results) < len(ids):
        msg = client.recv()
        if msg.get("msg") == "result" and msg["id"] in ids:
            results.append(msg)
    return results


@pytest.fixture
def advisory_lock(live_database_url):
    """Take an advisory lock on the live database; yields (key, release)."""
    key = 7_000_000 + os.getpid() % 1_000_000
    conn = psycopg2.connect(live_database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", [key])

    def release():
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock_all()")

    yield key, release
    release()
    conn.close()


def test_methods_holding_every_user_connection_delay_nothing_else(
        start_server, clean, sql, ddpctl, advisory_lock):
    key, release = advisory_lock
    live = start_server("--db-connections", str(USER_CONNECTIONS), "--node-heartbeat", "0.3")
    slow = [DDPClient(live.ws_url, timeout=30) for _ in range(SLOW_CLIENTS)]
    with DDPClient(live.ws_url) as subscriber, DDPClient(live.ws_url) as probe, \
            DDPClient(live.ws_url) as late, DDPClient(live.ws_url) as victim:
        for client in (subscriber, probe, late, victim, *slow):
            client.connect()
        subscriber.subscribe("AllBooks")
        node_row = "SELECT heartbeat_at FROM ddpctl_node WHERE pid = %s"
        eventually(lambda: sql(node_row, [live.process.pid], fetch=True))

        # Every user connection is taken by a method waiting on the lock (two more wait for
        # a connection); the first slow client then queues a quick method behind its own.
        for client in slow:
            client.send({"msg": "method", "method": "wait_for_lock", "id": "slow", "params": [key]})
        slow[0].send({"msg": "method", "method": "echo", "id": "after", "params": ["after"]})
        waiting = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s "
                   "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
        eventually(lambda: sql(waiting, [key], fetch=True)[0][0] == USER_CONNECTIONS)

        # Another client's method that needs no database answers.
        assert probe.call("echo", "quick") == ["quick"]
        # A change committed elsewhere reaches the subscriber (observer refresh, system lane).
        insert_book(sql, "Dune")
        wait_for(subscriber, lambda c: any(b["title"] == "Dune" for b in books(c).values()))
        # Joining a publication whose observer is running needs no database connection.
        late.subscribe("AllBooks")
        assert [b["title"] for b in books(late).values()] == ["Dune"]
        # The registry heartbeat keeps beating.
        first = sql(node_row, [live.process.pid], fetch=True)[0][0]
        eventually(lambda: sql(node_row, [live.process.pid], fetch=True)[0][0] > first)
        # Operator commands are carried out.
        out = ddpctl("conns", "close", victim.session).stdout
        assert f"closed connection {victim.session}" in out

        assert nothing_received(slow), "a slow call ended before the checks: they proved nothing"
        assert sql(waiting, [key], fetch=True)[0][0] == USER_CONNECTIONS
        release()
        # One connection's messages stay in order: its quick method answers after its slow one.
        assert [(r["id"], r["result"]) for r in results_of(slow[0], {"slow", "after"})] == [
            ("slow", key), ("after", ["after"])]
        for client in slow[1:]:
            assert [r.get("result") for r in results_of(client, {"slow"})] == [key]
    for client in slow:
        client.close()


def test_methods_that_wait_without_the_database_hold_no_connection(start_server, clean, sql, tmp_path):
    live = start_server("--db-connections", str(USER_CONNECTIONS))
    flag = tmp_path / "go"
    slow = [DDPClient(live.ws_url, timeout=30) for _ in range(SLOW_CLIENTS)]
    try:
        with DDPClient(live.ws_url) as probe:
            for client in (probe, *slow):
                client.connect()
            for client in slow:
                client.send({"msg": "method", "method": "wait_for_file", "id": "slow", "params": [str(flag)]})
            # Methods and publications that query still get connections, at once.
            assert probe.call("pg_sleep", 0) == 0
            insert_book(sql, "Emma", pages=500)
            probe.subscribe("BigBooks", 100)  # a new observer: its first query needs a connection
            assert [b["title"] for b in books(probe).values()] == ["Emma"]
            assert nothing_received(slow)
            flag.touch()
            for client in slow:
                assert [r.get("result") for r in results_of(client, {"slow"})] == [str(flag)]
    finally:
        for client in slow:
            client.close()


def test_a_method_runs_to_its_end_after_its_client_leaves(start_server, clean, sql, tmp_path):
    live = start_server("--db-connections", str(USER_CONNECTIONS))
    flag = tmp_path / "go"
    with DDPClient(live.ws_url) as leaving:
        leaving.connect()
        leaving.send({"msg": "method", "method": "wait_for_file", "id": "w", "params": [str(flag), "Orphan"]})
        leaving.send({"msg": "method", "method": "echo", "id": "e", "params": []})
        eventually(lambda: (tmp_path / "go.waiting").exists())
    flag.touch()  # the client has gone; its method goes on
    eventually(lambda: sql("SELECT name FROM bookstore_author", fetch=True) == [("Orphan",)])
    with DDPClient(live.ws_url) as client:  # and the server carries on
        client.connect()
        assert client.call("pg_sleep", 0) == 0


def test_database_connections_stay_within_the_budget_under_50_clients_and_http(
        start_server, clean, sql, live_database_url):
    live = start_server("--db-connections", str(USER_CONNECTIONS))
    budget = USER_CONNECTIONS + SYSTEM_CONNECTIONS + 1  # + the dispatcher's LISTEN connection
    name = urllib.parse.urlsplit(live_database_url).path.lstrip("/")
    ours = [sql("SELECT pg_backend_pid()", fetch=True)[0][0]]  # this test's connection is not the server's
    clients = [DDPClient(live.ws_url, timeout=60) for _ in range(50)]
    http_errors = []

    def fetch_pages():
        try:
            for _ in range(3):
                with urllib.request.urlopen(f"{live.url}/testapp/pg-sleep/0.1", timeout=60) as response:
                    assert response.read() == b"0.1"
        except Exception as exc:  # reported by the main thread
            http_errors.append(exc)

    seen, user_seen = [], []
    stop = threading.Event()

    def sample():
        admin = psycopg2.connect(live_database_url)
        admin.autocommit = True  # pg_stat_activity is a snapshot per transaction (no `with admin`)
        try:
            while not stop.is_set():
                with admin.cursor() as cur:
                    cur.execute("SELECT count(*), count(*) FILTER (WHERE query LIKE 'SELECT pg_sleep%%' "
                                "AND state = 'active') FROM pg_stat_activity WHERE datname = %s "
                                "AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
                                "AND pid <> ALL(%s)", [name, ours])
                    total, sleeping = cur.fetchone()
                seen.append(total)
                user_seen.append(sleeping)
                time.sleep(0.01)
        finally:
            admin.close()

    sampler = threading.Thread(target=sample)
    browsers = [threading.Thread(target=fetch_pages) for _ in range(10)]
    try:
        for client in clients:
            client.connect()
        clients[0].subscribe("AllBooks")  # the system lane gets work too
        sampler.start()
        for thread in browsers:
            thread.start()
        for client in clients:
            client.send({"msg": "method", "method": "pg_sleep", "id": "q", "params": [0.05]})
        for client in clients:
            assert [r.get("result") for r in results_of(client, {"q"})] == [0.05]
        for thread in browsers:
            thread.join()
    finally:
        stop.set()
        if sampler.is_alive():
            sampler.join()
        for client in clients:
            client.close()
    assert not http_errors, http_errors
    assert max(user_seen) == USER_CONNECTIONS, json.dumps(user_seen)  # used to the full, never beyond
    assert max(seen) <= budget, (max(seen), budget)


@pytest.mark.parametrize(("args", "env", "expected"), [
    ((), {}, 3),  # the Django setting
    ((), {"DDPCTL_DB_CONNECTIONS": "4"}, 4),  # the environment variable wins over the setting
    (("--db-connections", "5"), {"DDPCTL_DB_CONNECTIONS": "4"}, 5),  # the option wins over both
])
def test_db_connections_from_option_env_setting(start_server, args, env, expected):
    live = start_server("--settings", "settings_db_connections", *args, env={"COLUMNS": "300", **env})
    budget = expected + SYSTEM_CONNECTIONS + 1
    assert f"at most {budget} DB connections ({expected} for user code)" in live.output()


@pytest.mark.parametrize("value", ["0", "-2", "true", "\"10\""])
def test_an_invalid_db_connections_setting_is_refused(value):
    result = subprocess.run([sys.executable, "-m", "ddpctl", "serve", *SERVER_ARGS, "--settings",
                             "settings_db_connections", "--listen", "127.0.0.1:0"],
                            env={**os.environ, "TEST_DDPCTL_DB_CONNECTIONS": value}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "DDPCTL_DB_CONNECTIONS must be a positive integer" in result.stderr
    assert "Traceback" not in result.stderr
