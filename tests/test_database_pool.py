"""The user lane's connection pool against a real PostgreSQL, in this process.

Each lease runs on a thread of its own (a fresh Django connection object, as a greenlet
has in the server).  Transaction behaviour is checked against Django's own: the same
program of writes, ``on_commit`` callbacks and nested atomic blocks must leave the same
rows and run the same callbacks with and without the pool.
"""
import itertools
import threading
import time

import pytest
from bookstore.models import Genre
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddpctl.server.database_pool import DatabasePool

pytestmark = pytest.mark.django_db(transaction=True)


def in_thread(fn, *args):
    """``fn(*args)`` on a new thread (its own Django connection); its result or exception."""
    outcome = {}

    def run():
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def backend_pid():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


class Rollback(Exception):
    pass


# A program: steps run inside a DDP method's transaction.atomic(), then maybe a failure.
steps = st.recursive(
    st.sampled_from([("insert",), ("on_commit",), ("wait",)]),
    lambda inner: st.tuples(st.just("atomic"), st.lists(inner, max_size=3), st.booleans()),
    max_leaves=8)
programs = st.tuples(st.lists(steps, max_size=5), st.booleans())


def run_program(program, prefix, log, leased=None):
    numbers = itertools.count()

    def execute(items):
        for item in items:
            if item[0] == "insert":
                Genre.objects.create(name=f"{prefix}{next(numbers)}")
            elif item[0] == "on_commit":
                number = next(numbers)
                transaction.on_commit(lambda number=number: log.append(number))
            elif item[0] == "wait" and leased is not None:
                leased.append(leased_now())  # connections held while user code waits
            elif item[0] == "atomic":
                try:
                    with transaction.atomic():
                        execute(item[1])
                        if item[2]:
                            raise Rollback
                except Rollback:
                    pass

    body, fail = program
    try:
        with transaction.atomic():
            execute(body)
            if fail:
                raise Rollback
    except Rollback:
        pass


def touches_database(items):
    return any(item[0] in ("insert", "atomic") for item in items)


pool = DatabasePool(2)


@pytest.fixture(scope="module", autouse=True)
def _close_pool():
    yield
    pool.close()  # or the test database could not be dropped


def leased_now():
    return pool.leased


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(program=programs)
def test_transactions_behave_as_without_the_pool(program):
    plain_log, pooled_log, leased = [], [], []
    in_thread(run_program, program, "plain-", plain_log)
    in_thread(pool.run, run_program, program, "pooled-", pooled_log, leased)
    names = list(Genre.objects.values_list("name", flat=True))
    Genre.objects.all().delete()
    assert sorted(n.removeprefix("pooled-") for n in names if n.startswith("pooled-")) == \
        sorted(n.removeprefix("plain-") for n in names if n.startswith("plain-"))
    assert pooled_log == plain_log
    assert pool.leased == 0 and pool.idle <= pool.size
    # User code holds no connection until its first query, even inside transaction.atomic().
    body, _fail = program
    first = next((i for i, item in enumerate(body) if touches_database([item])), len(body))
    waits_before = sum(1 for item in body[:first] if item[0] == "wait")
    assert leased[:waits_before] == [0] * waits_before


def test_connections_are_reused_not_reopened():
    reuse = DatabasePool(1)
    pids = [in_thread(reuse.run, backend_pid) for _ in range(5)]
    assert len(set(pids)) == 1 and reuse.idle == 1 and reuse.leased == 0
    reuse.close()
    assert reuse.idle == 0


def test_a_transaction_left_open_is_rolled_back_and_the_connection_reused():
    lenient = DatabasePool(1)

    def leave_open():
        transaction.set_autocommit(False)
        Genre.objects.create(name="left open")
        return backend_pid()

    first = in_thread(lenient.run, leave_open)

    def check():
        assert connection.get_autocommit()
        return backend_pid(), Genre.objects.filter(name="left open").exists()

    assert in_thread(lenient.run, check) == (first, False)
    lenient.close()


def test_a_broken_connection_is_dropped():
    fragile = DatabasePool(1)
    first = in_thread(fragile.run, backend_pid)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [first])
    # CONN_HEALTH_CHECKS (on in the test settings) catches it once it has idled a while.
    fragile._idle = [(raw, level, since - 60) for raw, level, since in fragile._idle]
    second = in_thread(fragile.run, backend_pid)
    assert second != first and fragile.leased == 0
    fragile.close()


def test_pooled_connections_killed_while_idle_are_replaced_before_reuse():

    pair = DatabasePool(2)
    both_held = threading.Barrier(2)
    pids = []

    def hold():
        pid = backend_pid()
        both_held.wait(timeout=10)  # two leases at once: two pooled connections
        return pid

    threads = [threading.Thread(target=lambda: pids.append(in_thread(pair.run, hold))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(pids)) == 2 and pair.idle == 2
    with connection.cursor() as cursor:  # what a PostgreSQL restart does to them
        cursor.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s) pid", [pids])
        deadline = time.monotonic() + 10
        while True:  # until both backends are gone (their sockets then read EOF)
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids])
            if cursor.fetchone()[0] == 0:
                break
            assert time.monotonic() < deadline
            time.sleep(0.02)
    # An idle connection whose socket reads EOF is checked and replaced: no call fails.
    assert in_thread(pair.run, backend_pid) not in pids
    assert in_thread(pair.run, backend_pid) not in pids
    assert pair.leased == 0
    pair.close()
