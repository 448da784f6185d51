"""An observer whose query fails ends only its own subscriptions; connection errors are retried.

Real PostgreSQL, real ``ddpctl serve``, real DDP clients.
"""
import time

import psycopg2
import pytest
from django.db import connection as django_connection
from django.db.utils import DatabaseErrorWrapper
from test_live_data import author, books, insert_book, wait_for

from ddpctl.api import MeteorError
from ddpctl.database_errors import is_connection_error
from ddpctl.testing import DDPClient

# Meteor's wire object for an exception that is not a Meteor.Error (livedata_server.js).
INTERNAL_SERVER_ERROR = {"isClientSafe": True, "error": 500, "reason": "Internal server error",
                         "message": "Internal server error [500]", "errorType": "Meteor.Error"}
FAILED_LOG = "failed; ending its subscriptions with 500 Internal server error"


def read_until(client, done, timeout=60.0):
    """Read messages until ``done(messages so far)``; returns them all."""
    client.ws.settimeout(timeout)
    deadline = time.monotonic() + timeout
    seen = []
    while not done(seen):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last messages: {seen[-5:]}")
        seen.append(client.recv())
    return seen


def test_a_failing_query_ends_only_its_observer_and_the_dispatcher_moves_on(start_server, clean, sql):
    # Refreshes run on the system lane's two connections: the one that ran the failed query
    # must stay usable for the later batches.
    live = start_server()
    author_id = author(sql)
    with DDPClient(live.ws_url) as failing, DDPClient(live.ws_url) as healthy:
        failing.connect()
        healthy.connect()
        ratio = failing.subscribe("PagesRatio")
        failing.subscribe("BigBooks", 1)  # a healthy subscription on the same connection
        healthy.subscribe("AllBooks")
        zero = insert_book(sql, "Zero pages", 0)  # 1000 / pages raises for this row
        # More than one read batch (5,000 changes) after the failing row, then a later commit.
        sql("INSERT INTO bookstore_book (title, author_id, pages, blurb) "
            "SELECT 'book-' || i, %s, i, '' FROM generate_series(1, 7000) i", [author_id])
        last = insert_book(sql, "Last", 1)

        wait_for(healthy, lambda c: len(books(c)) == 7002, timeout=120)
        assert str(zero) in books(healthy) and books(healthy)[str(last)]["title"] == "Last"

        messages = read_until(failing, lambda seen: len(books(failing)) == 7001 and any(
            m.get("msg") == "nosub" for m in seen), timeout=120)
        nosubs = [m for m in messages if m.get("msg") == "nosub"]
        assert nosubs == [{"msg": "nosub", "id": ratio, "error": INTERNAL_SERVER_ERROR}]
        assert str(zero) not in books(failing)  # BigBooks(1) does not publish it; PagesRatio is gone

        # Later batches still flow to both clients.
        sql("UPDATE bookstore_book SET title = 'Renamed' WHERE id = %s", [last])
        for client in (healthy, failing):
            wait_for(client, lambda c: books(c)[str(last)]["title"] == "Renamed")

        output = live.output()  # the traceback once, and never taken for a connection problem
        assert output.count(FAILED_LOG) == output.count("DataError: division by zero") == 1
        assert "change dispatcher: DataError" not in output

        # A new subscription to the failing publication fails at its first query, the same way.
        with pytest.raises(MeteorError) as info:
            failing.subscribe("PagesRatio")
        assert (info.value.error, info.value.reason) == (500, "Internal server error")
    assert live.output().count(FAILED_LOG) == 2


def test_a_connection_killed_during_an_observer_query_is_retried_not_ended(start_server, clean, sql):
    """A connection error in an observer's query retries the batch: no subscription ends."""
    live = start_server()
    book = insert_book(sql, "Before", 1)
    with DDPClient(live.ws_url) as client:
        client.connect()
        sub = client.subscribe("SlowBooks")
        sql("UPDATE bookstore_book SET title = 'After' WHERE id = %s", [book])
        killed = []
        deadline = time.monotonic() + 10
        while not killed and time.monotonic() < deadline:  # the refresh's query, while it runs
            killed = sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                         "AND query LIKE '%%pg_sleep(0.5)%%' AND state = 'active'", fetch=True)
            time.sleep(0.02)
        assert killed, "the observer's query was not seen running"
        messages = wait_for(client, lambda c: books(c)[str(book)]["title"] == "After", timeout=30)
        client.call("echo")  # still connected, and nothing else pending
    assert not [m for m in messages if m.get("msg") == "nosub"], messages
    assert sub and FAILED_LOG not in live.output()
    assert "change dispatcher: OperationalError" in live.output()  # retried as a connection problem


def django_wrapped(exc):
    """``exc`` as Django's cursor raises it (``django.db.DataError`` etc., cause kept)."""
    try:
        with DatabaseErrorWrapper(django_connection):
            raise exc
    except Exception as wrapped:  # the error under test
        return wrapped


def test_connection_errors_are_told_from_query_errors(live_database_url):
    conn = psycopg2.connect(live_database_url)
    conn.autocommit = True

    def error_of(statement, target=conn):
        try:
            with target.cursor() as cur:
                cur.execute(statement)
        except Exception as exc:  # the error under test
            return exc
        raise AssertionError(f"{statement} did not fail")

    query_errors = [error_of("SELECT 1 / 0"),  # DataError
                    error_of("SELECT * FROM no_such_table"),  # ProgrammingError
                    error_of("SET statement_timeout = 10; SELECT pg_sleep(1)"),  # QueryCanceled (57014)
                    RuntimeError("user code")]
    for exc in query_errors:
        assert not is_connection_error(exc), exc
        assert not is_connection_error(django_wrapped(exc)), exc

    victim = psycopg2.connect(live_database_url)
    with victim.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", [pid])
    time.sleep(0.2)
    terminated = error_of("SELECT 1", victim)  # 57P01, or libpq's "server closed the connection"
    closed = error_of("SELECT 1", victim)  # InterfaceError: connection already closed
    victim.close()
    conn.close()
    for exc in (terminated, closed):
        assert is_connection_error(exc), exc
        wrapped = django_wrapped(exc)
        assert type(wrapped).__module__ == "django.db.utils" and is_connection_error(wrapped), wrapped
