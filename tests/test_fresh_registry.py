"""``ddpctl subs ls`` / ``conns ls`` show the nodes' current state, not their last heartbeat's:
every live node is asked (operator command ``registry``) to write its rows before they are
read; a node that does not answer in time is listed from its registry rows, with their age.

Real ``ddpctl serve`` processes on one database, real clients, the real CLI.  The nodes'
registry heartbeat is a minute, so nothing here can be the heartbeat's doing."""
import contextlib
import datetime
import json
import os
import signal

import pytest
from conftest import eventually
from test_operator import node_ids

from ddpctl.testing import DDPClient

SLOW_BEAT = "60"  # --node-heartbeat: no heartbeat write happens during a test


def ls(ddpctl, what, *args):
    result = ddpctl(what, "ls", "--json", *args)
    return json.loads(result.stdout), result.stderr


def db_now(sql):
    return sql("SELECT clock_timestamp()", fetch=True)[0][0]


def connected(stack, *urls):
    """A connected client per URL, closed with ``stack``."""
    clients = [stack.enter_context(DDPClient(url)) for url in urls]
    for client in clients:
        client.connect()
    return clients


@pytest.fixture
def forget_nodes(sql):
    """Node ids whose rows a test removes at its end (a killed node's would stay listed, and
    make later tests' ``ls`` wait for it, until its heartbeat expires)."""
    ids = []
    yield ids
    for node in ids:
        sql("DELETE FROM ddpctl_subscription WHERE node = %s", [node])
        sql("DELETE FROM ddpctl_connection WHERE node = %s", [node])
        sql("DELETE FROM ddpctl_node WHERE id = %s", [node])


def test_subs_and_conns_ls_show_the_current_state_of_every_node(start_server, clean, ddpctl, sql,
                                                                  forget_nodes):
    a = start_server("--node-heartbeat", SLOW_BEAT)
    b = start_server("--node-heartbeat", SLOW_BEAT)
    ids = node_ids(ddpctl, a, b)
    ours = set(ids.values())
    forget_nodes.extend(ours)
    with contextlib.ExitStack() as stack:
        c1, c2, c3 = connected(stack, a.ws_url, b.sockjs_url, b.ws_url)
        s1 = c1.subscribe("AllBooks")
        s2 = c2.subscribe("BooksByAuthorEmail", "a@example.com")
        s3 = c3.subscribe("AllGenres")
        before = db_now(sql)

        # The first ls after `ready` lists them all, on both nodes, as of now.
        subs, err = ls(ddpctl, "subs")
        mine = {(r["connection"], r["sub_id"], r["publication"]): r for r in subs if r["node"] in ours}
        assert set(mine) == {(c1.session, s1, "AllBooks"), (c2.session, s2, "BooksByAuthorEmail"),
                             (c3.session, s3, "AllGenres")}, subs
        assert {r["source"] for r in mine.values()} == {"live"}
        assert all(datetime.datetime.fromisoformat(r["as_of"]) >= before for r in mine.values())
        assert mine[(c1.session, s1, "AllBooks")]["node"] == ids[a.process.pid]
        assert mine[(c2.session, s2, "BooksByAuthorEmail")]["params"] == ["a@example.com"]
        assert "warning" not in err
        conns, _ = ls(ddpctl, "conns")
        assert {(r["id"], r["node"], r["transport"], r["subscriptions"], r["source"])
                for r in conns if r["node"] in ours} == {
            (c1.session, ids[a.process.pid], "websocket", 1, "live"),
            (c2.session, ids[b.process.pid], "sockjs", 1, "live"),
            (c3.session, ids[b.process.pid], "websocket", 1, "live")}

        # Filters ask only the matching node, and still list its current state.
        only_b, _ = ls(ddpctl, "subs", "--node", ids[b.process.pid])
        assert {(r["connection"], r["sub_id"]) for r in only_b} == {(c2.session, s2), (c3.session, s3)}

        # An unsub and a new connection show at once, too.
        c3.send({"msg": "unsub", "id": s3})
        eventually(lambda: c3.recv().get("msg") == "nosub")
        with DDPClient(a.ws_url) as c4:
            c4.connect()
            conns, _ = ls(ddpctl, "conns")
            assert {r["id"] for r in conns if r["node"] in ours} == {c1.session, c2.session, c3.session,
                                                                     c4.session}
        subs, _ = ls(ddpctl, "subs")
        assert {(r["connection"], r["sub_id"]) for r in subs if r["node"] in ours} == {(c1.session, s1),
                                                                                     (c2.session, s2)}

        # A hung node does not answer: its rows come from its registry, marked, with their age.
        os.kill(b.process.pid, signal.SIGSTOP)
        try:
            result = ddpctl("subs", "ls", "--json", "--timeout", "3")
            rows = {r["connection"]: r for r in json.loads(result.stdout) if r["node"] in ours}
            assert rows[c1.session]["source"] == "live"
            assert rows[c2.session]["source"] == "registry" and rows[c2.session]["sub_id"] == s2
            assert datetime.datetime.fromisoformat(rows[c2.session]["as_of"]) < db_now(sql)
            name = f"{b.process.pid}"
            assert "did not answer within 3 s" in result.stderr and name in result.stderr
            piped = ddpctl("subs", "ls", "--timeout", "3").stdout.splitlines()
            assert piped[0].split("\t")[-1] == "SOURCE"
            sources = {line.split("\t")[1]: line.split("\t")[-1] for line in piped[1:]}
            assert sources[c1.session] == "live"
            assert sources[c2.session].startswith("registry ") and sources[c2.session].endswith("s old")
        finally:
            os.kill(b.process.pid, signal.SIGCONT)
        subs, _ = ls(ddpctl, "subs")
        assert {r["source"] for r in subs if r["node"] in ours} == {"live"}

        # --timeout 0 asks no node: the rows of the last writes, all marked as such.
        subs, _ = ls(ddpctl, "subs", "--timeout", "0")
        assert {(r["connection"], r["sub_id"]) for r in subs if r["node"] in ours} == {(c1.session, s1),
                                                                                     (c2.session, s2)}
        assert {r["source"] for r in subs if r["node"] in ours} == {"registry"}

        # A killed node's rows stay listed, from its registry, until its heartbeat expires.
        b.process.kill()
        b.process.wait()
        result = ddpctl("conns", "ls", "--json", "--timeout", "3")
        rows = {r["id"]: r for r in json.loads(result.stdout) if r["node"] in ours}
        assert rows[c1.session]["source"] == "live"
        assert rows[c2.session]["source"] == rows[c3.session]["source"] == "registry"
        assert "did not answer" in result.stderr

    # A node that stops cleanly takes its rows with it.
    a.stop()
    subs, _ = ls(ddpctl, "subs", "--timeout", "3")
    assert not [r for r in subs if r["node"] == ids[a.process.pid]]


def test_ls_without_live_nodes_and_a_bad_timeout(clean, ddpctl, sql):
    sql("DELETE FROM ddpctl_node")  # what earlier tests' killed nodes left behind
    result = ddpctl("subs", "ls", "--json")
    assert result.returncode == 0 and json.loads(result.stdout) == [] and result.stderr == ""
    bad = ddpctl("conns", "ls", "--timeout", "-1", check=False)
    assert bad.returncode == 2 and "--timeout" in bad.stderr
    assert "last heartbeat" in ddpctl("subs", "ls", "--help").stdout
