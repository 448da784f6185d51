"""Prometheus metrics and health endpoints of real ``ddpctl serve`` processes (issue 15).

The metrics are read the way Prometheus reads them (``prometheus_client``'s own parser);
readiness is watched while the dispatcher's LISTEN backend is killed with
``pg_terminate_backend``, as a failover or an idle-connection reaper would.
"""
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request

import psycopg2
import pytest
from conftest import eventually, wait_for
from prometheus_client.parser import text_string_to_metric_families
from test_live_data import books, insert_book

from ddpctl.ddp.errors import MeteorError
from ddpctl.testing import DDPClient, free_port


def get(url, accept=None):
    """``(status, headers, body text)`` of a GET."""
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


def scrape(url):
    """Every sample: ``{(name, frozenset(labels)): value}``, parsed by prometheus_client."""
    status, headers, text = get(url)
    assert status == 200, text
    assert headers["Content-Type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name, **labels):
    """The sum of ``name``'s samples whose labels include ``labels`` (0 if none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def test_metrics_parse_and_move_with_connect_subscribe_call_and_write(start_server, clean, sql, ddpctl):
    server = start_server()
    url = server.url + "/metrics"
    before = scrape(url)
    nodes = {dict(ls)["node"] for (n, ls) in before if n == "ddpctl_node_info"}
    assert len(nodes) == 1
    node = nodes.pop()
    assert node in {n["id"] for n in json.loads(ddpctl("nodes", "ls", "--json").stdout)}
    # Every ddpctl series is labelled with its node and host, so nodes aggregate.
    for name, ls in before:
        if name.startswith("ddpctl_"):
            assert dict(ls)["node"] == node and dict(ls)["hostname"], name

    with DDPClient(server.ws_url) as client:
        client.connect()
        connected = scrape(url)
        assert value(connected, "ddpctl_connections", transport="websocket") == 1
        assert value(connected, "ddpctl_connections_opened_total") == value(
            before, "ddpctl_connections_opened_total") + 1
        assert (value(connected, "ddpctl_messages_received_total")
                > value(before, "ddpctl_messages_received_total"))

        client.subscribe("AllBooks")
        subscribed = scrape(url)
        assert value(subscribed, "ddpctl_subscriptions") == 1
        assert value(subscribed, "ddpctl_observers") == 1
        assert value(subscribed, "ddpctl_publication_subscriptions", publication="AllBooks") == 1
        assert value(subscribed, "ddpctl_publication_start_seconds_count", publication="AllBooks") == 1

        book_id = client.call("books.add", "Dune", "frank@example.com", 412)  # a method, and a write
        wait_for(client, lambda c: any(d.get("title") == "Dune" for d in books(c).values()))
        called = scrape(url)
        assert value(called, "ddpctl_method_duration_seconds_count", method="books.add", outcome="ok") == 1
        assert value(called, "ddpctl_method_duration_seconds_sum", method="books.add") > 0
        assert value(called, "ddpctl_messages_sent_total") > value(subscribed, "ddpctl_messages_sent_total")
        assert value(called, "ddpctl_sent_bytes_total") > value(subscribed, "ddpctl_sent_bytes_total")
        assert (value(called, "ddpctl_dispatcher_changes_total")
                > value(subscribed, "ddpctl_dispatcher_changes_total"))
        assert value(called, "ddpctl_dispatcher_position") > value(before, "ddpctl_dispatcher_position")
        assert value(called, "ddpctl_publication_messages_total", publication="AllBooks") >= 2  # book, author

        with pytest.raises(MeteorError):
            client.call("books.rename", 10**9, "Nothing")  # 404 Book not found
        failed = scrape(url)
        assert value(failed, "ddpctl_method_duration_seconds_count", method="books.rename",
                     outcome="error") == 1
        assert value(failed, "ddpctl_method_errors_total") == value(called, "ddpctl_method_errors_total") + 1

        insert_book(sql, "Emma")  # a write from outside: psql
        wait_for(client, lambda c: any(d.get("title") == "Emma" for d in books(c).values()))
        written = scrape(url)
        assert (value(written, "ddpctl_dispatcher_changes_total")
                > value(failed, "ddpctl_dispatcher_changes_total"))
        assert book_id
    closed = eventually(lambda: (lambda s: s if value(s, "ddpctl_connections") == 0 else None)(scrape(url)))
    assert value(closed, "ddpctl_subscriptions") == 0
    assert value(closed, "ddpctl_observers") == 0
    assert value(closed, "ddpctl_ready") == 1
    assert value(closed, "ddpctl_dispatcher_connected") == 1
    # Process metrics come with them (a single process).
    assert value(closed, "process_resident_memory_bytes") > 0
    # OpenMetrics for a scraper that asks for it.
    status, headers, text = get(url, accept="application/openmetrics-text; version=1.0.0")
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert text.rstrip().endswith("# EOF")


def test_errors_are_counted_by_kind(start_server):
    """User code that raises: the method's outcome, the failed subscription, and the
    error logged with its traceback, each counted."""
    server = start_server()
    url = server.url + "/metrics"
    before = scrape(url)
    with DDPClient(server.ws_url) as client:
        client.connect()
        with pytest.raises(MeteorError):
            client.call("crash")  # ZeroDivisionError: 500
        with pytest.raises(MeteorError):
            client.call("meteor_error")
        with pytest.raises(MeteorError):
            client.subscribe("failing")  # RuntimeError in the publication: nosub with 500
        after = scrape(url)
    assert value(after, "ddpctl_method_duration_seconds_count", method="crash", outcome="internal_error") == 1
    assert value(after, "ddpctl_method_duration_seconds_count", method="meteor_error", outcome="error") == 1
    assert value(after, "ddpctl_method_errors_total") == value(before, "ddpctl_method_errors_total") + 2
    assert (value(after, "ddpctl_publication_errors_total")
            == value(before, "ddpctl_publication_errors_total") + 1)
    # Both tracebacks were logged at ERROR: that is the error count.
    assert value(after, "ddpctl_log_records_total", level="error") >= value(
        before, "ddpctl_log_records_total", level="error") + 2


def test_health_endpoints_answer_json(start_server):
    server = start_server()
    status, headers, body = get(server.url + "/healthz")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["status"] == "ok"
    status, _, body = get(server.url + "/readyz")
    ready = json.loads(body)
    assert status == 200 and ready["status"] == "ready" and ready["problems"] == []
    assert ready["dispatcher"]["connected"] is True
    # Not Django's: a probe with an IP address as Host gets the answer too (ALLOWED_HOSTS is not asked).
    request = urllib.request.Request(server.url + "/readyz", headers={"Host": "10.1.2.3"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    request = urllib.request.Request(server.url + "/readyz", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405


def test_readiness_is_false_while_the_dispatchers_listen_connection_is_killed(start_server, sql):
    server = start_server()
    url = server.url + "/readyz"
    assert get(url)[0] == 200

    def dispatcher_backends():
        return sql("SELECT pid FROM pg_stat_activity WHERE application_name = 'ddpctl-dispatcher' "
                   "AND datname = current_database()", fetch=True)

    assert dispatcher_backends()
    stop = threading.Event()

    def keep_killing():  # each reconnect is killed too: the dispatcher stays down, backing off
        while not stop.is_set():
            sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'ddpctl-dispatcher' AND datname = current_database()")
            stop.wait(0.02)

    killer = threading.Thread(target=keep_killing)
    killer.start()
    try:
        status, headers, body = eventually(lambda: (lambda r: r if r[0] == 503 else None)(get(url)))
    finally:
        stop.set()
        killer.join()
    answer = json.loads(body)
    assert headers["Content-Type"] == "application/json"
    assert answer["status"] == "not ready" and answer["dispatcher"]["connected"] is False
    assert "not connected" in answer["problems"][0]
    assert get(server.url + "/healthz")[0] == 200  # alive all along
    eventually(lambda: get(url)[0] == 200, timeout=30)
    assert dispatcher_backends()
    samples = scrape(server.url + "/metrics")
    assert value(samples, "ddpctl_dispatcher_reconnects_total") >= 1
    assert value(samples, "ddpctl_ready") == 1


def test_readiness_is_false_while_the_dispatcher_is_behind(start_server, live_database_url):
    """A read of the changelog that cannot finish (an exclusive lock on it, as a long
    migration would take) leaves the dispatcher behind: past --ready-max-lag the node is
    not ready; /metrics and /readyz still answer at once; ready again once it catches up."""
    server = start_server("--ready-max-lag", "1")
    url = server.url + "/readyz"
    scrape(server.url + "/metrics")  # the changelog's size is read in the background from now on
    locker = psycopg2.connect(live_database_url)
    try:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE ddpctl_change IN ACCESS EXCLUSIVE MODE")
        status, _, body = eventually(lambda: (lambda r: r if r[0] == 503 else None)(get(url)))
        answer = json.loads(body)
        assert answer["dispatcher"]["connected"] is True and answer["dispatcher"]["lag_seconds"] > 1
        assert "behind the changelog" in answer["problems"][0]
        samples = scrape(server.url + "/metrics")
        assert value(samples, "ddpctl_dispatcher_lag_seconds") > 1 and value(samples, "ddpctl_ready") == 0
    finally:
        locker.rollback()
        locker.close()
    eventually(lambda: get(url)[0] == 200)
    samples = eventually(lambda: (lambda s: s if value(s, "ddpctl_changelog_bytes") > 0 else None)(
        scrape(server.url + "/metrics")))
    assert value(samples, "ddpctl_dispatcher_lag_seconds") < 1
    assert value(samples, "ddpctl_changelog_head_position") >= value(samples, "ddpctl_dispatcher_position")


def test_metrics_address_and_no_metrics(start_server):
    port = free_port()
    server = start_server("--metrics-address", f"127.0.0.1:{port}")
    apart = f"http://127.0.0.1:{port}"
    samples = scrape(apart + "/metrics")
    assert value(samples, "ddpctl_node_info") == 1
    assert get(apart + "/readyz")[0] == 200
    assert get(apart + "/nothing")[0] == 404
    # Not on the main port then: the app's own answer (the test site's Meteor page).
    assert "ddpctl_node_info" not in get(server.url + "/metrics")[2]
    assert get(server.url + "/healthz")[0] == 200

    off = start_server("--no-metrics", "--readiness-path", "/ready", "--liveness-path", "")
    assert "ddpctl_node_info" not in get(off.url + "/metrics")[2]
    assert get(off.url + "/healthz")[1]["Content-Type"] != "application/json"
    assert get(off.url + "/ready")[0] == 200


def test_workers_are_nodes_and_any_worker_answers_for_all(start_server):
    server = start_server("--workers", "2")
    url = server.url + "/metrics"

    def both():
        samples = scrape(url)
        nodes = {dict(ls)["node"] for (n, ls) in samples if n == "ddpctl_node_info"}
        return samples if len(nodes) == 2 else None

    samples = eventually(both, timeout=30)
    info = [dict(ls) for (n, ls) in samples if n == "ddpctl_node_info"]
    worker_pids = {int(labels["pid"]) for labels in info}
    assert len(worker_pids) == 2 and server.process.pid not in worker_pids  # the workers, not the parent
    clients = [DDPClient(server.ws_url) for _ in range(4)]
    try:
        for client in clients:
            client.connect()
        # Whichever worker answers, the connections of both add up (each worker's own
        # values are at most a second old).
        eventually(lambda: value(scrape(url), "ddpctl_connections") == 4)
        samples = scrape(url)
        assert value(samples, "ddpctl_connections_opened_total") >= 4
        assert {dict(ls)["node"] for (n, ls) in samples if n == "ddpctl_connections_opened_total"} >= {
            dict(ls)["node"] for (n, ls) in samples if n == "ddpctl_node_info"}
    finally:
        for client in clients:
            client.close()
    # A worker that dies is restarted as a new node; the dead one's series are gone.
    dead = next(labels for labels in info if int(labels["pid"]) != server.process.pid)
    os.kill(int(dead["pid"]), signal.SIGKILL)

    def replaced():
        try:
            samples = scrape(url)
        except OSError:  # a connection the kernel had queued on the dead worker's socket is reset
            return None
        nodes = {dict(ls)["node"] for (n, ls) in samples if n == "ddpctl_node_info"}
        return samples if len(nodes) == 2 and dead["node"] not in nodes else None

    samples = eventually(replaced, timeout=30)
    assert not [n for (n, ls) in samples if dict(ls).get("node") == dead["node"]]


def worker_pids(url):
    """The pids of the nodes a scrape lists."""
    return {int(dict(ls)["pid"]) for (n, ls) in scrape(url) if n == "ddpctl_node_info"}


def test_sigterm_while_a_dead_worker_waits_to_restart_stops_everything(start_server):
    """SIGTERM within the restart delay of a worker that died: no worker is started after
    it (it would never hear the signal), the parent exits 0, nothing is left running."""
    server = start_server("--workers", "2")
    url = server.url + "/metrics"
    pids = eventually(lambda: (lambda p: p if len(p) == 2 else None)(worker_pids(url)), timeout=30)
    os.kill(pids.pop(), signal.SIGKILL)
    time.sleep(0.3)  # the parent has seen it die and waits a second to restart it
    assert server.stop(timeout=15) == 0
    survivor = pids.pop()
    eventually(lambda: not os.path.exists(f"/proc/{survivor}"), timeout=5)
    output = server.output()
    assert "restarting it" in output and output.count(" started (pid ") == 2  # none after the signal


@pytest.mark.parametrize("args, message", [
    (["--metrics-path", "metrics"], "is not a URL path"),
    (["--readiness-path", "/websocket"], "DDP's own path"),
    (["--metrics-path", "/healthz"], "must differ"),
    (["--metrics-address", "127.0.0.1:notaport"], "invalid port"),
])
def test_bad_observability_options_are_one_line_errors(ddpctl, args, message):
    result = ddpctl("serve", *args, check=False)
    assert result.returncode == 2 and message in result.stderr
