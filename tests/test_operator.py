"""The operator toolkit against real ``ddpctl serve`` processes and real clients:
``nodes/conns/subs ls``, ``conns close``, ``tail``, ``replay`` and ``changelog prune``."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import websocket
from conftest import SERVER_ARGS, eventually
from test_live_data import BOOK, books, insert_book, wait_for

from ddpctl.commands.dbshell import psql_executable
from ddpctl.testing import DDPClient

BEAT = "0.3"  # --node-heartbeat: a node is gone after 3 missed beats (0.9 s)



def ls(ddpctl, what, *args):
    return json.loads(ddpctl(what, "ls", "--json", *args).stdout)


def subs_of(ddpctl, *args, nodes=None):
    """Subscriptions listed (on ``nodes`` only, if given: other tests' servers may share the database)."""
    return {(r["connection"], r["sub_id"], r["publication"], json.dumps(r["params"]))
            for r in ls(ddpctl, "subs", *args) if nodes is None or r["node"] in nodes}


def node_ids(ddpctl, *servers):
    """pid -> node id of ``servers``, once all of them are registered."""
    pids = {s.process.pid for s in servers}
    found = eventually(lambda: (lambda ids: ids if set(ids) == pids else None)(
        {n["pid"]: n["id"] for n in ls(ddpctl, "nodes") if n["pid"] in pids}))
    return found


@pytest.fixture
def two_nodes(start_server, clean):
    return start_server("--node-heartbeat", BEAT), start_server("--node-heartbeat", BEAT)


def test_subs_ls_lists_exactly_the_live_subscriptions_on_both_nodes(two_nodes, ddpctl, sql):
    a, b = two_nodes
    ours = set(node_ids(ddpctl, a, b).values())
    insert_book(sql, "Dune")
    with DDPClient(a.ws_url) as c1, DDPClient(b.sockjs_url) as c2, DDPClient(b.ws_url) as c3:
        for c in (c1, c2, c3):
            c.connect()
        s1 = c1.subscribe("AllBooks")
        s2 = c2.subscribe("BooksByAuthorEmail", "a@example.com")
        s3 = c2.subscribe("AllGenres")
        expected = {(c1.session, s1, "AllBooks", "[]"),
                    (c2.session, s2, "BooksByAuthorEmail", '["a@example.com"]'),
                    (c2.session, s3, "AllGenres", "[]")}
        eventually(lambda: subs_of(ddpctl, nodes=ours) == expected)

        rows = {r["sub_id"] + r["connection"]: r for r in ls(ddpctl, "subs")}
        first = rows[s1 + c1.session]
        assert first["documents"] == 2 and first["collections"] == ["bookstore.author", BOOK]
        assert first["remote_address"] == "127.0.0.1" and first["user_id"] is None
        nodes = {n["pid"]: n for n in ls(ddpctl, "nodes") if n["id"] in ours}
        assert set(nodes) == {a.process.pid, b.process.pid}
        assert first["node"] == nodes[a.process.pid]["id"]
        assert nodes[b.process.pid]["connections"] == 2 and nodes[b.process.pid]["subscriptions"] == 2

        # Filters
        only_books = subs_of(ddpctl, "--publication", "AllBooks", nodes=ours)
        assert only_books == {(c1.session, s1, "AllBooks", "[]")}
        assert {s[1] for s in subs_of(ddpctl, "--node", nodes[b.process.pid]["id"])} == {s2, s3}
        assert {s[1] for s in subs_of(ddpctl, "--node", f"{nodes[b.process.pid]['host']}:{b.process.pid}")} \
            == {s2, s3}
        assert {s[1] for s in subs_of(ddpctl, "--collection", BOOK, nodes=ours)} == {s1, s2}
        assert subs_of(ddpctl, "--user", "42", nodes=ours) == set()
        assert len(subs_of(ddpctl, "--user", "", nodes=ours)) == 3
        conns = [c for c in ls(ddpctl, "conns") if c["node"] in ours]
        assert {(c["id"], c["transport"]) for c in conns} == {
            (c1.session, "websocket"), (c2.session, "sockjs"), (c3.session, "websocket")}

        # An unsub and a disconnect are gone on the next heartbeat.
        c2.send({"msg": "unsub", "id": s3})
        c3.close()
        expected.discard((c2.session, s3, "AllGenres", "[]"))
        eventually(lambda: subs_of(ddpctl, nodes=ours) == expected)
        eventually(lambda: {c["id"] for c in ls(ddpctl, "conns") if c["node"] in ours}
                   == {c1.session, c2.session})

        # A killed node (no chance to clean up) is forgotten once its heartbeat is overdue.
        b.process.kill()
        # (forgotten after 3 missed beats, 0.9 s; the wait allows for the CLI's start-up on a busy machine)
        eventually(lambda: subs_of(ddpctl, nodes=ours) == {(c1.session, s1, "AllBooks", "[]")}, timeout=10)
        assert [n["pid"] for n in ls(ddpctl, "nodes") if n["id"] in ours] == [a.process.pid]
        # ...and the live node deletes its rows: no ghosts left behind.
        eventually(lambda: not sql("SELECT 1 FROM ddpctl_subscription WHERE node = %s",
                                   [nodes[b.process.pid]["id"]], fetch=True))
        assert [n["pid"] for n in ls(ddpctl, "nodes", "--all") if n["id"] in ours] == [a.process.pid]


def test_migrate_keeps_live_registry_state(start_server, clean, ddpctl):
    server = start_server("--node-heartbeat", BEAT)
    with DDPClient(server.ws_url) as client:
        client.connect()
        sub = client.subscribe("AllBooks")
        ours = set(node_ids(ddpctl, server).values())
        eventually(lambda: subs_of(ddpctl, nodes=ours) == {(client.session, sub, "AllBooks", "[]")})
        ddpctl("migrate", "--noinput")
        assert subs_of(ddpctl, nodes=ours) == {(client.session, sub, "AllBooks", "[]")}


def test_ls_output_for_a_pipe_and_for_people(start_server, clean, ddpctl):
    server = start_server("--node-heartbeat", BEAT)
    with DDPClient(server.ws_url) as client:
        client.connect()
        client.subscribe("BooksByAuthorEmail", "x@y.z")
        (node,) = node_ids(ddpctl, server).values()
        eventually(lambda: ls(ddpctl, "subs", "--node", node))
        piped = ddpctl("subs", "ls", "--node", node).stdout.splitlines()
        assert piped[0].split("\t") == ["NODE", "CONNECTION", "REMOTE", "USER", "PUBLICATION", "PARAMS",
                                        "DOCS", "REFRESH", "AGE", "SOURCE"]
        row = piped[1].split("\t")
        assert row[1] == client.session and row[4] == "BooksByAuthorEmail" and row[5] == '["x@y.z"]'
        assert row[7] == "multiplexed"
        hostile = client.subscribe("HostileAll")  # one of its querysets has a composite primary key
        eventually(lambda: any(r["sub_id"] == hostile for r in ls(ddpctl, "subs", "--node", node)))
        (entry,) = [r for r in ls(ddpctl, "subs", "--node", node) if r["sub_id"] == hostile]
        assert entry["refresh"] == "alone: testapp.HostilePair has a composite primary key"
        assert "\x1b[" not in "".join(piped)  # no colours in a pipe
        assert ddpctl("nodes", "ls").stdout.startswith("NODE\tHOST\tPID")


def test_conns_close_disconnects_the_right_client(start_server, clean, ddpctl):
    a, b = start_server("--node-heartbeat", BEAT), start_server("--node-heartbeat", BEAT)
    with DDPClient(a.ws_url) as victim, DDPClient(b.ws_url) as bystander, DDPClient(a.ws_url) as neighbour:
        for c in (victim, bystander, neighbour):
            c.connect()
        ours = set(node_ids(ddpctl, a, b).values())
        eventually(lambda: len([c for c in ls(ddpctl, "conns") if c["node"] in ours]) == 3)
        out = ddpctl("conns", "close", victim.session[:8]).stdout  # a unique prefix will do
        assert f"closed connection {victim.session}" in out
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            for _ in range(10):
                victim.recv()
        assert bystander.call("echo", 1) == [1] and neighbour.call("echo", 2) == [2]
        eventually(lambda: {c["id"] for c in ls(ddpctl, "conns") if c["node"] in ours}
                   == {bystander.session, neighbour.session})
        # It can reconnect.
        with DDPClient(a.ws_url) as again:
            again.connect()
            assert again.call("echo", 3) == [3]
    missing = ddpctl("conns", "close", "nosuchconnection", check=False)
    assert missing.returncode == 1 and "no live connection 'nosuchconnection'" in missing.stderr


# -- tail ---------------------------------------------------------------------------------

class Tail:
    """``ddpctl tail --json`` running in the background (killed after the test if still running)."""

    running: list["Tail"] = []

    def __init__(self, url, *args):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ddpctl", "tail", "--json", *args, *SERVER_ARGS],
            env={**os.environ, "DATABASE_URL": url}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        Tail.running.append(self)

    def stop(self):
        self.process.send_signal(signal.SIGINT)
        out, err = self.process.communicate(timeout=20)
        return self.process.returncode, [json.loads(line) for line in out.splitlines()], err


@pytest.fixture(autouse=True)
def _no_tail_left_behind():
    yield
    while Tail.running:
        process = Tail.running.pop().process
        if process.poll() is None:
            process.kill()
            process.communicate()


def tail_backend(sql):
    rows = sql("SELECT pid FROM pg_stat_activity WHERE application_name = 'ddpctl-tail' "
               "AND datname = current_database()", fetch=True)
    return rows[0][0] if rows else None


def changelog_after(sql, position):
    return sql('SELECT id, "table", op, "row" FROM ddpctl_change WHERE id > %s ORDER BY id',
               [position], fetch=True)


def last_position(sql):
    return sql("SELECT coalesce(max(id), 0) FROM ddpctl_change", fetch=True)[0][0]


def test_tail_json_follows_orm_and_psql_writes_in_commit_order_across_a_killed_connection(
        start_server, clean, sql, live_database_url):

    server = start_server()
    start = last_position(sql)
    tail = Tail(live_database_url)
    eventually(lambda: tail_backend(sql))
    with DDPClient(server.ws_url) as client:
        client.connect()
        first = client.call("books.add", "Dune", "frank@herbert.com", 412)  # the ORM, in the server
        client.call("books.rename", first, "Dune Messiah")
        psql = psql_executable()
        subprocess.run([psql, live_database_url, "-v", "ON_ERROR_STOP=1", "-c",
                        "UPDATE bookstore_book SET pages = 500"], check=True, capture_output=True)
        old = tail_backend(sql)
        sql("SELECT pg_terminate_backend(%s)", [old])
        for i in range(20):  # while tail reconnects
            insert_book(sql, f"Book {i}")
        client.call("books.delete", first)
        eventually(lambda: tail_backend(sql) not in (None, old))
        insert_book(sql, "After the reconnect")
    expected = changelog_after(sql, start)
    time.sleep(1.5)  # the one-second poll at most
    code, records, err = tail.stop()
    assert code == 0, err
    assert "reconnecting" in err and "Traceback" not in err
    assert [(r["position"], r["table"], r["op"][0].upper(), r["id"]) for r in records] == \
        [tuple(row) for row in expected]
    assert [r["position"] for r in records] == sorted(r["position"] for r in records)
    updates = [r for r in records if r["op"] == "update" and r["table"] == "bookstore_book"]
    assert updates[0]["fields"] == ["title"] and updates[0]["collection"] == BOOK
    assert any(r["fields"] == ["pages"] for r in updates)  # the psql UPDATE
    assert records[-1]["op"] == "insert" and len(expected) >= 25


def test_tail_filters_and_since(start_server, clean, sql, ddpctl, live_database_url):
    start = last_position(sql)
    book = insert_book(sql, "Old news")
    sql("UPDATE bookstore_book SET pages = 7 WHERE id = %s", [book])
    sql("DELETE FROM bookstore_book WHERE id = %s", [book])
    tail = Tail(live_database_url, "--since", str(start + 1), "--collection", BOOK, "--op", "update")
    eventually(lambda: tail_backend(sql))
    time.sleep(0.5)
    code, records, err = tail.stop()
    assert code == 0, err
    assert [(r["op"], r["id"], r["fields"]) for r in records] == [("update", str(book), ["pages"])]
    # --since TIME and plain output
    since_time = Tail(live_database_url, "--since", "10m")
    eventually(lambda: tail_backend(sql))
    time.sleep(0.5)
    code, records, _ = since_time.stop()
    assert code == 0 and {r["id"] for r in records if r["table"] == "bookstore_book"} >= {str(book)}
    bad = ddpctl("tail", "--since", "yesterday-ish", check=False)
    assert bad.returncode == 2 and "neither a position" in bad.stderr


# -- replay -------------------------------------------------------------------------------

def drain(client, seconds=0.5):
    """Messages that arrive within ``seconds``."""
    client.ws.settimeout(seconds)
    out = []
    try:
        while True:
            out.append(client.recv())
    except (websocket.WebSocketTimeoutException, TimeoutError):
        return out
    finally:
        client.ws.settimeout(10)


def test_replay_of_a_tail_file_and_of_a_since_range(start_server, clean, sql, ddpctl, live_database_url,
                                                    tmp_path):
    server = start_server("--node-heartbeat", BEAT)
    start = last_position(sql)
    with DDPClient(server.ws_url) as reader, DDPClient(server.ws_url) as other:
        reader.connect()
        other.connect()
        reader.subscribe("AllBooks")
        other.subscribe("BooksByAuthorEmail", "nobody@example.com")  # may not see these books
        tail = Tail(live_database_url, "--since", str(start + 1))
        eventually(lambda: tail_backend(sql))  # started (a SIGINT before then is Click's "Aborted!")
        first = insert_book(sql, "Dune")
        second = insert_book(sql, "Emma", email="jane@austen.org")
        sql("UPDATE bookstore_book SET pages = 9 WHERE id = %s", [first])
        wait_for(reader, lambda c: books(c).get(str(first), {}).get("pages") == 9)
        time.sleep(1.5)
        code, records, err = tail.stop()
        assert code == 0, err
        path = tmp_path / "changes.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        drain(reader)

        # A dry run names who would get what, and sends nothing.
        dry = json.loads(ddpctl("replay", str(path), "--dry-run", "--json").stdout)
        # (AllBooks publishes the authors too: two books, two authors)
        assert dry["messages"] == 4 and dry["connections"] == 1 and dry["dry_run"]
        assert {(r["connection"], r["id"]) for r in dry["recipients"] if r["collection"] == BOOK} == {
            (reader.session, str(first)), (reader.session, str(second))}
        assert "dry run" in ddpctl("replay", str(path), "--dry-run").stdout
        assert drain(reader) == [] and drain(other) == []

        # The file: each book again, with every field the client may see, to the reader only.
        out = ddpctl("replay", str(path)).stdout
        assert "sent 4 message(s) to 1 connection(s) on 1 node(s)" in out
        got = [m for m in drain(reader, 1.0) if m["msg"] == "changed" and m["collection"] == BOOK]
        assert [(m["id"], m["fields"]["title"], m["fields"]["pages"]) for m in got] == [
            (str(first), "Dune", 9), (str(second), "Emma", 0)]
        assert drain(other) == []

        # A --since range from the changelog, narrowed to one collection.
        ddpctl("replay", "--since", str(start + 1), "--collection", BOOK)
        got = [m for m in drain(reader, 1.0) if m["msg"] == "changed"]
        assert sorted(m["id"] for m in got) == sorted([str(first), str(second)])
        ddpctl("replay", "--since", str(start + 1), "--collection", "bookstore.genre")
        assert drain(reader) == []

        # The client still works and its data is right.
        assert reader.call("books.count") == 2


def test_replay_refuses_bad_input_before_sending_anything(start_server, clean, ddpctl, tmp_path):
    start_server("--node-heartbeat", BEAT)
    path = tmp_path / "bad.jsonl"
    path.write_text('{"table": "bookstore_book", "op": "update", "id": "1"}\nnot json\n')
    result = ddpctl("replay", str(path), check=False)
    assert result.returncode == 1 and "line 2" in result.stderr
    both = ddpctl("replay", str(path), "--since", "1", check=False)
    assert both.returncode == 2 and "not both" in both.stderr
    neither = ddpctl("replay", check=False)
    assert neither.returncode == 2


def test_replay_without_live_nodes_says_so(clean, ddpctl, sql):
    sql("DELETE FROM ddpctl_node")
    result = ddpctl("replay", "--since", "1", check=False)
    assert result.returncode == 1 and "no live nodes" in result.stderr


# -- retention ------------------------------------------------------------------------------

def test_changelog_prune(clean, sql, ddpctl):
    start = last_position(sql)
    for i in range(5):
        insert_book(sql, f"Old {i}")
    old = [r[0] for r in changelog_after(sql, start)]
    sql("UPDATE ddpctl_change SET at = now() - interval '3 days' WHERE id = ANY(%s)", [old])
    insert_book(sql, "New")
    assert "would delete" in ddpctl("changelog", "prune", "--older-than", "2d", "--dry-run").stdout
    assert len(changelog_after(sql, start)) > len(old)
    out = ddpctl("changelog", "prune", "--older-than", "2d").stdout
    assert f"deleted {len(old)} change(s)" in out
    remaining = changelog_after(sql, start)
    assert remaining and all(r[0] not in old for r in remaining)
    bad = ddpctl("changelog", "prune", "--older-than", "soon", check=False)
    assert bad.returncode == 2 and "invalid duration" in bad.stderr
