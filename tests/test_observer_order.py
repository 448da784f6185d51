"""Messages of one batch go out in commit order, across the collections of a publication.

The observer's diff is checked with property-based tests over an in-memory database (its
queries are plain Python functions), and end to end with a real server and PostgreSQL.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import psycopg2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpctl.ddp.errors import MeteorError
from ddpctl.livedata import capture
from ddpctl.livedata.observer import ChangeSet, Cursor, ObserverRegistry
from ddpctl.livedata.publish import Subscription
from ddpctl.testing import DDPClient

# -- an in-memory database and the observer over it ------------------------------------

# The in-memory tables have no capture triggers to install: mark them captured.
capture._captured.update({"author", "book"})

AUTHORS = ["1", "2", "3"]
BOOKS = ["1", "2", "3", "4", "5", "6"]


class MemoryCollection:
    def __init__(self, name: str, table: str) -> None:
        self.name, self.table = name, table

    @staticmethod
    def doc_id(pk: str) -> str:
        return str(pk)

    def pk_from_id(self, doc_id: str) -> str:
        return doc_id


class MemoryCursor(Cursor):
    """A cursor whose query is ``select(db)``: what a queryset over ``tables`` would yield."""

    def __init__(self, db: dict, collection: MemoryCollection, tables: set[str],
                 select: Callable[[dict], dict], sliced: bool = False) -> None:
        self.db, self.collection, self.select = db, collection, select
        self.table = collection.table
        self.tables = tables | {self.table}
        self.sliced = sliced
        self.docs = {}
        self.shape, self.params, self.alone = None, (), "an in-memory query"  # the per-observer path
        self.cohort_key = None

    def fetch_all(self):
        return {k: dict(v) for k, v in self.select(self.db).items()}

    def fetch(self, pks):
        wanted = set(pks)
        return {k: v for k, v in self.fetch_all().items() if k in wanted}


AUTHOR = MemoryCollection("authors", "author")
BOOK = MemoryCollection("books", "book")


def all_rows(table):
    return lambda db: db[table]


def books_of_email(email):
    def select(db):
        return {k: v for k, v in db["book"].items() if db["author"][v["author"]]["email"] == email}
    return select


def authors_with_email(email):
    return lambda db: {k: v for k, v in db["author"].items() if v["email"] == email}


def top_books(n):
    return lambda db: dict(sorted(db["book"].items(), key=lambda kv: (-kv[1]["pages"], kv[0]))[:n])


PUBLICATIONS = {
    # like AllBooks: two collections, no join
    "all": lambda db: [MemoryCursor(db, AUTHOR, set(), all_rows("author")),
                       MemoryCursor(db, BOOK, set(), all_rows("book"))],
    # like BooksByAuthorEmail: books join authors
    "by_email": lambda db: [MemoryCursor(db, BOOK, {"author"}, books_of_email("x")),
                            MemoryCursor(db, AUTHOR, set(), authors_with_email("x"))],
    # a sliced queryset: rows enter and leave because other rows changed
    "top": lambda db: [MemoryCursor(db, BOOK, set(), top_books(3), sliced=True)],
}


class Recorder:
    """A SubscriptionSink that keeps the client's view and the data messages in order."""

    def __init__(self) -> None:
        self.view: dict[tuple[str, str], dict] = {}
        self.messages: list[tuple[str, str, str]] = []
        self.errors: list[MeteorError] = []

    def sub_added(self, sub_id, collection, doc_id, fields):
        self.view[collection, doc_id] = dict(fields)

    def sub_prepared(self, sub_id, message):
        key = (message.collection, message.id)
        self.messages.append((message.op, *key))
        if message.op == "added":
            assert key not in self.view
            self.view[key] = dict(message.fields or {})
        elif message.op == "removed":
            del self.view[key]
        else:
            self.view[key].update(message.fields or {})
            for name in message.cleared or ():
                del self.view[key][name]

    def sub_welcome(self, sub, documents):
        for name, docs in documents:
            for doc_id, fields in docs.items():
                self.sub_added(sub.id, name, doc_id, fields)

    def sub_ready(self, sub_id):
        pass

    def sub_failed(self, sub_id, error):
        self.errors.append(error)

    def sub_stopped(self, sub_id):
        pass


def initial_db():
    return {"author": {a: {"name": f"A{a}", "email": "x" if a == "1" else "y"} for a in AUTHORS},
            "book": {b: {"title": f"B{b}", "author": AUTHORS[int(b) % 3], "pages": int(b)}
                     for b in BOOKS[:4]}}


# A change: (table, pk or None for TRUNCATE, new row or None for DELETE)
author_change = st.tuples(st.just("author"), st.sampled_from(AUTHORS),
                          st.fixed_dictionaries({"name": st.sampled_from(["P", "Q", "R"]),
                                                 "email": st.sampled_from(["x", "y"])}))
book_change = st.tuples(st.just("book"), st.sampled_from(BOOKS), st.one_of(
    st.none(), st.fixed_dictionaries({"title": st.sampled_from(["S", "T", "U"]),
                                      "author": st.sampled_from(AUTHORS),
                                      "pages": st.integers(0, 9)})))
truncate = st.just(("book", None, None))
batches = st.lists(st.lists(st.one_of(author_change, book_change, author_change, book_change, truncate),
                            min_size=1, max_size=12), min_size=1, max_size=4)


def apply_change(db, change):
    table, pk, row = change
    if pk is None:
        db[table].clear()
    elif row is None:
        db[table].pop(pk, None)
    else:
        db[table][pk] = dict(row)


def cause_position(changes: list, cursor: MemoryCursor, doc_id: str) -> int:
    """Where a message about ``doc_id`` belongs, from the change list alone: the last change
    of its own row (a TRUNCATE of its table counts), else the last change that can have moved
    it (another table the query reads; for a sliced query, any row of its table)."""
    own = [i for i, (table, pk, _) in enumerate(changes)
           if table == cursor.table and pk in (doc_id, None)]
    if own:
        return own[-1]
    others = [i for i, (table, _, _) in enumerate(changes)
              if table in cursor.tables and (table != cursor.table or cursor.sliced)]
    return others[-1]


@settings(max_examples=300, deadline=None)
@given(publication=st.sampled_from(sorted(PUBLICATIONS)), batches=batches)
def test_messages_follow_the_changes_and_end_in_a_fresh_querys_view(publication, batches):
    db = initial_db()
    registry = ObserverRegistry()
    observer, _ = registry.get_or_create(publication, lambda: PUBLICATIONS[publication](db))
    client = Recorder()
    observer.add(Subscription(client, "s1", publication, []))
    observer.initialize()
    for batch in batches:
        changes = ChangeSet()
        for change in batch:
            apply_change(db, change)
            changes.add(change[0], change[1])
        start = len(client.messages)
        observer.refresh(changes)
        sent = client.messages[start:]
        # One message per document per batch (several changes of a document are conflated) ...
        assert len({(c, i) for _, c, i in sent}) == len(sent)
        # ... in the order of the changes that caused them, across collections.
        cursors = {c.collection.name: c for c in observer.cursors}
        positions = [cause_position(batch, cursors[c], i) for _, c, i in sent]
        assert positions == sorted(positions), (batch, sent)
        # The client's view is what a fresh query returns.
        fresh = {(c.collection.name, k): v for c in PUBLICATIONS[publication](db)
                 for k, v in c.fetch_all().items()}
        assert client.view == fresh
    assert not client.errors


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.one_of(st.none(), st.sampled_from("123"))),
                min_size=1, max_size=20), st.integers(0, 20))
def test_a_merged_changeset_is_the_changeset_of_both_batches(changes, split):
    whole, first, second = ChangeSet(), ChangeSet(), ChangeSet()
    for i, (table, pk) in enumerate(changes):
        whole.add(table, pk)
        (first if i < split else second).add(table, pk)
    first.merge(second)
    assert first == whole


def test_a_failing_query_ends_that_observer_with_a_500_and_leaves_others_alone(caplog):
    db = initial_db()
    registry = ObserverRegistry()

    def exploding(db):
        if any(row["pages"] == 0 for row in db["book"].values()):
            raise ZeroDivisionError("a serializer dividing by pages")
        return db["book"]

    bad, _ = registry.get_or_create("bad", lambda: [MemoryCursor(db, BOOK, set(), exploding)])
    good, _ = registry.get_or_create("good", lambda: PUBLICATIONS["all"](db))
    bad_client, good_client = Recorder(), Recorder()
    bad.add(Subscription(bad_client, "s1", "bad", []))
    bad.add(Subscription(bad_client, "s2", "bad", []))
    good.add(Subscription(good_client, "s3", "good", []))
    bad.initialize()
    good.initialize()
    changes = ChangeSet()
    for change in [("book", "1", {"title": "Zero", "author": "1", "pages": 0}),
                   ("author", "2", {"name": "N", "email": "y"})]:
        apply_change(db, change)
        changes.add(change[0], change[1])
    for observer in registry.affected(changes):
        observer.refresh(changes)  # does not raise
    assert [(e.error, e.reason) for e in bad_client.errors] == [(500, "Internal server error")] * 2
    assert len(registry) == 1 and registry.affected(changes) == [good]
    assert good_client.messages == [("changed", "books", "1"), ("changed", "authors", "2")]
    assert not good_client.errors
    logged = [r for r in caplog.records if r.exc_info and "failed" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info[0] is ZeroDivisionError


# -- end to end ----------------------------------------------------------------------------

def changed_in_order(messages):
    return [(m["collection"].split(".")[1], m["id"]) for m in messages if m.get("msg") == "changed"]


def setup_rows(sql):
    authors = [sql("INSERT INTO bookstore_author (name, email) VALUES (%s, %s) RETURNING id",
                   [f"A{i}", f"a{i}@example.com"], fetch=True)[0][0] for i in range(3)]
    books = [sql("INSERT INTO bookstore_book (title, author_id, pages, blurb) VALUES (%s, %s, 1, '') "
                 "RETURNING id", [f"B{i}", authors[i]], fetch=True)[0][0] for i in range(3)]
    # Not sorted by id, and alternating between the two collections of AllBooks.
    return [("book", books[2]), ("author", authors[1]), ("book", books[0]), ("author", authors[2]),
            ("book", books[1]), ("author", authors[0])]


def rename(cur, table, pk, name):
    column = "title" if table == "book" else "name"
    cur.execute(f"UPDATE bookstore_{table} SET {column} = %s WHERE id = %s", [name, pk])


def read_changes(client, count, timeout=20.0):
    """Read until ``count`` ``changed`` messages arrived; their (collection, id) in order."""
    client.ws.settimeout(timeout)
    seen = []
    deadline = time.monotonic() + timeout
    while len(changed_in_order(seen)) < count:
        assert time.monotonic() < deadline, seen
        seen.append(client.recv())
    return changed_in_order(seen)


def test_one_transaction_reaches_the_client_in_statement_order(start_server, clean, sql, live_database_url):
    live = start_server()
    order = setup_rows(sql)
    with DDPClient(live.ws_url) as client:
        client.connect()
        client.subscribe("AllBooks")
        conn = psycopg2.connect(live_database_url)
        with conn, conn.cursor() as cur:  # one transaction: one batch
            for table, pk in order:
                rename(cur, table, pk, f"renamed-{table}-{pk}")
        conn.close()
        assert read_changes(client, 6) == [(t, str(pk)) for t, pk in order]


def test_transactions_read_in_one_batch_reach_the_client_in_commit_order(start_server, clean, sql):
    live = start_server()
    order = setup_rows(sql)
    with DDPClient(live.ws_url) as client, DDPClient(live.ws_url) as holder:
        client.connect()
        holder.connect()
        client.subscribe("AllBooks")
        holder.subscribe("SlowBooks")  # each refresh of its observer sleeps 0.5 s in PostgreSQL
        # A first change: the dispatcher refreshes SlowBooks' observer, and reads the changelog
        # again only once that batch is done, so the commits below are read together.
        sql("UPDATE bookstore_book SET pages = pages + 1 WHERE id = %s", [order[0][1]])
        deadline = time.monotonic() + 10
        while not sql("SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                      "AND application_name <> 'ddpctl-dispatcher' AND query LIKE '%%pg_sleep%%' "
                      "AND state = 'active' AND pid <> pg_backend_pid()", fetch=True):
            assert time.monotonic() < deadline, "the slow refresh did not start"
            time.sleep(0.01)
        for table, pk in order:  # autocommit: one transaction per document, in this order
            sql(f"UPDATE bookstore_{table} SET {'title' if table == 'book' else 'name'} = 'c' WHERE id = %s",
                [pk])
        assert read_changes(client, 7)[1:] == [(t, str(pk)) for t, pk in order]


def test_rows_moved_by_a_joined_table_go_at_the_position_of_that_change(start_server, clean, sql,
                                                                       live_database_url):
    live = start_server()
    x = sql("INSERT INTO bookstore_author (name, email) VALUES ('x', 'x@example.com') RETURNING id",
            fetch=True)[0][0]
    y = sql("INSERT INTO bookstore_author (name, email) VALUES ('y', 'y@example.com') RETURNING id",
            fetch=True)[0][0]
    b1, b2, b3 = (sql("INSERT INTO bookstore_book (title, author_id, pages, blurb) VALUES (%s, %s, 1, '') "
                      "RETURNING id", [t, a], fetch=True)[0][0] for t, a in [("b1", x), ("b2", y), ("b3", x)])
    with DDPClient(live.ws_url) as client:
        client.connect()
        client.subscribe("BooksByAuthorName", "x")
        conn = psycopg2.connect(live_database_url)
        with conn, conn.cursor() as cur:  # one transaction: one batch
            cur.execute("UPDATE bookstore_book SET title = 'b3!' WHERE id = %s", [b3])
            cur.execute("UPDATE bookstore_author SET name = 'x' WHERE id = %s", [y])  # b2 and y enter
            cur.execute("UPDATE bookstore_book SET title = 'b1!' WHERE id = %s", [b1])
        conn.close()
        client.ws.settimeout(20)
        seen = []
        while len([m for m in seen if m.get("msg") in ("added", "changed")]) < 4:
            seen.append(client.recv())
    data = [(m["msg"], m["collection"].split(".")[1], m["id"])
            for m in seen if m.get("msg") in ("added", "changed")]
    assert data[0] == ("changed", "book", str(b3))
    assert set(data[1:3]) == {("added", "book", str(b2)), ("added", "author", str(y))}
    assert data[3] == ("changed", "book", str(b1))


@pytest.mark.django_db(transaction=True)
def test_an_observer_reads_a_batch_in_the_snapshot_it_was_read_in():
    """A row changed again after its batch was read is read as of the batch (its later
    change comes with the next batch), so messages never carry state ahead of their place."""
    from bookstore.models import Author, Book
    from django.db import connection

    from ddpctl.livedata.collection import collections

    author = Author.objects.create(name="A", email="snapshot@example.com")
    book = Book.objects.create(title="as of the batch", author=author)
    registry = ObserverRegistry()
    observer, _ = registry.get_or_create(
        "snapshot", lambda: [Cursor(collections.for_model(Book), Book.objects.all())])
    observer.initialize()
    params = {k: v for k, v in connection.get_connection_params().items() if k != "cursor_factory"}
    exporter = psycopg2.connect(**params)
    try:
        with exporter.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur.execute("SELECT pg_export_snapshot()")
            changes = ChangeSet()
            changes.add("bookstore_book", str(book.pk))
            changes.snapshot, changes.taken_at = cur.fetchone()[0], time.monotonic()
        Book.objects.filter(pk=book.pk).update(title="the latest")  # after the batch was read
        observer.refresh(changes)
        assert observer.cursors[0].docs[str(book.pk)]["title"] == "as of the batch"
        later = ChangeSet()  # the next batch, read after the change: no snapshot, current rows
        later.add("bookstore_book", str(book.pk))
        observer.refresh(later)
        assert observer.cursors[0].docs[str(book.pk)]["title"] == "the latest"
    finally:
        exporter.close()
