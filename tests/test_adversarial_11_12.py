"""Adversarial review of issues 11 (multiplexed observers) and 12 (accounts, rate limits,
Origin checks): each test is a bug a new user can hit, written to fail until it is fixed.

The publications live in ``tests/adversarial_app`` (settings ``settings_adversarial``);
each client's view is compared with a fresh SQL query of the same rows, after the write
fence (a method's ``updated`` follows the data of every change committed before it).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import psycopg2
import pytest
from conftest import PYTHONPATH_ARGS, migrated_database

from ddpctl.testing import DDPClient, LiveServer

SETTINGS = ["--settings", "settings_adversarial", *PYTHONPATH_ARGS]
ITEM, BOOK = "adversarial_app.item", "bookstore.book"


@pytest.fixture(scope="module")
def database(django_db_blocker):
    """A fresh database migrated with ``adversarial_app``."""
    with migrated_database("ddpctl_adv", SETTINGS) as url:
        yield url


@pytest.fixture
def sql(database):
    conn = psycopg2.connect(database)
    conn.autocommit = True

    def run(statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []

    run("TRUNCATE bookstore_book_genres, bookstore_book, bookstore_author, adversarial_app_item "
        "RESTART IDENTITY CASCADE")
    yield run
    conn.close()


@pytest.fixture
def server(database, sql):
    live = LiveServer(SETTINGS, env={"DATABASE_URL": database})
    live.start()
    yield live
    live.stop()


def client_for(server: LiveServer, publication: str, *params: Any) -> DDPClient:
    client = DDPClient(server.ws_url)
    client.connect()
    client.subscribe(publication, *params)
    return client


def fence(*clients: DDPClient) -> None:
    """Every change committed so far has reached each client (the write fence of ``echo``)."""
    for client in clients:
        client.call("echo")


def ids(client: DDPClient, collection: str) -> set[str]:
    return set(client.collections.get(collection, {}))


def subscribe_together(server: LiveServer, publication: str,
                       params: list[tuple[Any, ...]]) -> list[DDPClient]:
    """One client per params, all subscribing at once (first queries share rounds)."""
    clients = [DDPClient(server.ws_url) for _ in params]
    for client in clients:
        client.connect()
    for client, args in zip(clients, params, strict=True):
        client.send({"msg": "sub", "id": "s", "name": publication, "params": list(args)})
    for client in clients:
        while (msg := client.recv()).get("msg") != "ready":
            assert msg.get("msg") != "nosub", msg
    return clients


# -- issue 11: multiplexed refresh -----------------------------------------------------------

def test_json_array_index_lookup_multiplexes_as_an_object_key(server, sql):
    """``filter(data__0=label)`` compiles to ``data -> %s`` with the integer 0 (an array
    index).  A shape casts every parameter to the type PostgreSQL infers when it prepares
    the statement -- ``text`` for ``jsonb -> $1`` -- which would look up the object key "0".
    Today this passes only because every JSONField lookup refreshes alone (its ``Jsonb``
    parameter compares by identity, so ``Shape._template`` reports "parameters in its SELECT
    list"); a guard for whoever makes JSON lookups multiplex."""
    a = DDPClient(server.ws_url)
    b = DDPClient(server.ws_url)
    for client, label in ((a, "x"), (b, "y")):
        client.connect()
        client.subscribe("ItemsByFirstTag", label)
    sql("INSERT INTO adversarial_app_item (id, name, score, data, tags) VALUES "
        "(gen_random_uuid(), 'array', 0, '[\"x\", \"y\"]', '{}'), "
        "(gen_random_uuid(), 'object', 0, '{\"0\": \"x\"}', '{}')")
    fence(a, b)
    want = {str(i) for (i,) in sql("SELECT id FROM adversarial_app_item WHERE data -> 0 = '\"x\"'::jsonb")}
    assert len(want) == 1
    assert ids(a, ITEM) == want


def test_float_factor_is_rounded_to_an_integer_in_the_multiplexed_query(server, sql):
    """``F("pages") * 0.5`` compiles to ``"pages" * %s``; PostgreSQL infers ``integer`` for
    the parameter, and the VALUES list casts 0.5 to it (1): the multiplexed refresh sends a
    150-page book to a subscriber of "pages * 0.5 > 100"."""
    sql("INSERT INTO bookstore_author (name, email) VALUES ('A', 'a@x.test')")
    half = client_for(server, "BooksScoredAbove", 0.5, 100.0)
    quarter = client_for(server, "BooksScoredAbove", 0.25, 100.0)
    sql("INSERT INTO bookstore_book (title, author_id, pages, blurb) VALUES "
        "('short', 1, 150, ''), ('long', 1, 300, ''), ('longest', 1, 500, '')")
    fence(half, quarter)
    for client, factor in ((half, 0.5), (quarter, 0.25)):
        want = {str(i) for (i,) in sql("SELECT id FROM bookstore_book WHERE pages * %s > 100", [factor])}
        assert ids(client, BOOK) == want, f"factor {factor}"


def _authors_with_books(sql, domain: str, authors: int, books: int) -> None:
    """``authors`` authors under ``domain``, each with ``books`` books whose longest is in
    the middle (so an unordered DISTINCT ON is unlikely to pick it)."""
    for a in range(authors):
        (author,) = sql("INSERT INTO bookstore_author (name, email) VALUES (%s, %s) RETURNING id",
                        [f"{domain}{a}", f"author{a}@{domain}"])[0]
        for b in range(books):
            pages = 1000 if b == books // 2 else 10 + b
            sql("INSERT INTO bookstore_book (title, author_id, pages, blurb) VALUES (%s, %s, %s, '')",
                [f"{domain}-{a}-{b}", author, pages])


def _longest_per_author(sql, domain: str) -> set[str]:
    return {str(i) for (i,) in sql(
        "SELECT DISTINCT ON (b.author_id) b.id FROM bookstore_book b JOIN bookstore_author a "
        "ON a.id = b.author_id WHERE a.email LIKE %s ORDER BY b.author_id, b.pages DESC, b.id",
        ["%" + domain])}


def test_distinct_on_loses_its_order_by_in_the_multiplexed_query(server, sql):
    """``order_by("author_id", "-pages").distinct("author_id")`` -- the longest book per
    author.  The shape drops ORDER BY when the queryset is not sliced, so the multiplexed
    statement's DISTINCT ON keeps an arbitrary book per author: after a change to a joined
    table (an author's name, which changes no result), subscribers hold other books."""
    for domain in ("a.test", "b.test"):
        _authors_with_books(sql, domain, authors=5, books=9)
    clients = {domain: client_for(server, "LongestBookPerAuthor", domain) for domain in ("a.test", "b.test")}
    for domain, client in clients.items():
        assert ids(client, BOOK) == _longest_per_author(sql, domain)  # each first query ran alone
    sql("UPDATE bookstore_author SET name = name || '!'")  # a joined table: every result is re-read
    fence(*clients.values())
    for domain, client in clients.items():
        assert ids(client, BOOK) == _longest_per_author(sql, domain), domain


def test_distinct_on_first_queries_in_one_round(server, sql):
    """The same query shape, first queried in a round of several (a burst of subscriptions)."""
    domains = [f"d{i}.test" for i in range(12)]
    for domain in domains:
        _authors_with_books(sql, domain, authors=2, books=9)
    clients = subscribe_together(server, "LongestBookPerAuthor", [(d,) for d in domains])
    wrong = [d for d, c in zip(domains, clients, strict=True) if ids(c, BOOK) != _longest_per_author(sql, d)]
    assert not wrong, f"{len(wrong)} of {len(domains)} subscribers got other books than the longest"


def test_a_query_that_reads_its_own_table_twice_misses_rows_moved_by_a_sibling(server, sql):
    """``filter(author__books__pages__gt=n)``: books of authors with a long book.  Making one
    book long brings its author's other books in; the refresh reads only the changed row's
    key (``Cursor.plan``: only the cursor's own table changed), so the sibling never arrives.
    ``plan`` is shared by the multiplexed and the alone refresh: both miss it."""
    sql("INSERT INTO bookstore_author (name, email) VALUES ('A', 'a@x.test')")
    sql("INSERT INTO bookstore_book (title, author_id, pages, blurb) VALUES ('one', 1, 100, ''), "
        "('two', 1, 200, '')")
    client = client_for(server, "BooksOfProlificAuthors", 500)
    other = client_for(server, "BooksOfProlificAuthors", 9999)  # another cohort of the shape
    fence(client, other)  # the inserts are behind us: the next batch holds only the update
    assert ids(client, BOOK) == set()
    sql("UPDATE bookstore_book SET pages = 600 WHERE title = 'two'")
    fence(client, other)
    assert ids(client, BOOK) == {"1", "2"}


def test_distinct_on_keeps_a_book_that_is_no_longer_the_longest(server, sql):
    """The longest book per author, then another book of that author becomes longer: it is
    added, but the previous longest one -- whose row did not change -- is never removed."""
    _authors_with_books(sql, "a.test", authors=1, books=3)
    client = client_for(server, "LongestBookPerAuthor", "a.test")
    other = client_for(server, "LongestBookPerAuthor", "b.test")
    fence(client, other)
    assert ids(client, BOOK) == _longest_per_author(sql, "a.test")
    sql("UPDATE bookstore_book SET pages = 5000 WHERE id = 1")
    fence(client, other)
    assert ids(client, BOOK) == _longest_per_author(sql, "a.test") == {"1"}


# -- issue 12: Django session login -----------------------------------------------------------

SESSION_SCRIPT = r"""
import json
import django
django.setup()
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

User = get_user_model()
User.objects.filter(username="adv-session").delete()
user = User.objects.create_user("adv-session", password="s3cret-pass")
client = Client()
assert client.login(username="adv-session", password="s3cret-pass")
print(json.dumps({"id": str(user.pk), "cookie": settings.SESSION_COOKIE_NAME + "=" +
                  client.cookies[settings.SESSION_COOKIE_NAME].value}))
"""


@pytest.mark.parametrize("revocation", [
    "UPDATE auth_user SET is_active = false WHERE id = %s",
    "UPDATE auth_user SET password = 'md5$x$changed' WHERE id = %s",
])
def test_a_session_login_outlives_deactivation_and_password_change(live_database_url, revocation):
    """With ``DDPCTL_SESSION_LOGIN``, a connection that started logged in from the Django
    session cookie stays logged in after its user is deactivated or changes password (a
    Django logout, documented as not reaching open connections, is not in question).  Django
    refuses that session on its next page, and a token login is revoked at once on every
    node, but the session-login connection keeps acting as the user until it reconnects:
    only token logins are in ``ddpctl.accounts.revocation``."""
    from conftest import ROOT, SERVER_ARGS
    env = {**os.environ, "DATABASE_URL": live_database_url, "DJANGO_SETTINGS_MODULE": "test_settings",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "examples" / "bookstore"), str(ROOT / "tests")])}
    session = json.loads(subprocess.run([sys.executable, "-c", SESSION_SCRIPT], env=env, check=True,
                                        capture_output=True, text=True, timeout=120).stdout)
    with LiveServer([*SERVER_ARGS, "--settings", "settings_session_login"],
                    env={"DATABASE_URL": live_database_url}) as live:
        with DDPClient(live.ws_url, header=[f"Cookie: {session['cookie']}"]) as client:
            client.connect()
            assert client.call("my_user_id") == session["id"]
            conn = psycopg2.connect(live_database_url)
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(revocation, [int(session["id"])])
            conn.close()
            try:
                for _ in range(20):  # the change reaches the node within a few batches
                    still = client.call("my_user_id")
                    if still is None:
                        break
                    time.sleep(0.25)
            except ConnectionError:
                still = None  # closed, as a revoked token login is
            assert still is None, "the connection still acts as the user"
