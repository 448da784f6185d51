"""The changelog reader against a real PostgreSQL (pytest-django's test database,
which has the capture triggers: ``post_migrate`` installs them)."""
import uuid

import psycopg2
import pytest
from bookstore.models import Author, Book
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddpctl.livedata import capture, changelog
from ddpctl.livedata.changelog import ChangelogReader
from ddpctl.livedata.observer import ChangeSet, Cursor, diff_fields

pytestmark = pytest.mark.django_db(transaction=True)


def dsn():
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    return params


@pytest.fixture
def conn():
    c = psycopg2.connect(**dsn())
    c.autocommit = True
    yield c
    c.close()


def other_connection():
    c = psycopg2.connect(**dsn())
    return c


def make_author(cur, email):
    cur.execute("INSERT INTO bookstore_author (name, email) VALUES ('x', %s) RETURNING id", [email])
    return cur.fetchone()[0]


def test_triggers_are_installed_on_published_tables():
    assert capture.missing() == []
    assert {"bookstore_book", "bookstore_author", "bookstore_book_genres", "testapp_note"} <= {
        t.table for t in capture.targets()}


def test_reader_sees_every_committed_change_once(conn):
    with conn.cursor() as cur:
        reader = ChangelogReader.at_end(cur)
        author = Author.objects.create(name="A", email="a@x")
        Book.objects.create(title="t", author=author)
        Book.objects.filter(author=author).update(pages=5)
        rows = reader.read(cur)
        assert [(r.table, r.op) for r in rows] == [
            ("bookstore_author", "I"), ("bookstore_book", "I"), ("bookstore_book", "U")]
        assert rows[2].fields == ["pages"]
        assert reader.read(cur) == []


def test_no_op_update_is_not_recorded(conn):
    with conn.cursor() as cur:
        reader = ChangelogReader.at_end(cur)
        author = Author.objects.create(name="A", email="noop@x")
        reader.read(cur)
        author.save()
        assert reader.read(cur) == []


def xid_of(c):
    with c.cursor() as cur:
        cur.execute("SELECT pg_current_xact_id()::text::bigint")
        return cur.fetchone()[0]


def test_slow_transaction_with_a_lower_id_is_not_skipped(conn):
    slow, fast = other_connection(), other_connection()
    try:
        with conn.cursor() as cur:
            reader = ChangelogReader.at_end(cur)
            with slow.cursor() as slow_cur:
                make_author(slow_cur, "slow@x")  # takes the lower id, stays uncommitted
            with fast.cursor() as fast_cur:
                make_author(fast_cur, "fast@x")
            fast.commit()
            first = reader.read(cur)
            assert len(first) == 1 and xid_of(slow) in reader.in_flight  # remembered
            assert reader.read(cur) == []                                # still running: kept
            assert xid_of(slow) in reader.in_flight
            slow_xid = xid_of(slow)
            slow.commit()
            second = reader.read(cur)
            assert len(second) == 1 and second[0].id < first[0].id  # commit order, not id order
            assert slow_xid not in reader.in_flight
            assert reader.read(cur) == []
    finally:
        slow.close()
        fast.close()


def test_rolled_back_transactions_are_forgotten(conn):
    doomed = other_connection()
    try:
        with conn.cursor() as cur:
            reader = ChangelogReader.at_end(cur)
            with doomed.cursor() as c:
                make_author(c, "doomed@x")
            doomed_xid = xid_of(doomed)
            Author.objects.create(name="B", email="after@x")
            assert len(reader.read(cur)) == 1 and doomed_xid in reader.in_flight
            doomed.rollback()
            Author.objects.create(name="C", email="later@x")
            rows = reader.read(cur)
            assert len(rows) == 1 and doomed_xid not in reader.in_flight
    finally:
        doomed.close()


def test_savepoints_and_rolled_back_subtransactions(conn):
    writer = other_connection()
    try:
        with conn.cursor() as cur:
            reader = ChangelogReader.at_end(cur)
            with writer.cursor() as w:
                w.execute("SAVEPOINT a")
                kept = make_author(w, "sp-kept@x")       # inside a subtransaction that is kept
                w.execute("RELEASE SAVEPOINT a")
                w.execute("SAVEPOINT b")
                make_author(w, "sp-undone@x")            # inside one that is rolled back
                w.execute("ROLLBACK TO SAVEPOINT b")
                Author.objects.create(name="later", email="sp-later@x")
                assert [r.row for r in reader.read(cur)] == [str(Author.objects.get(email="sp-later@x").pk)]
                later = make_author(w, "sp-last@x")
            writer.commit()
            assert [r.row for r in reader.read(cur)] == [str(kept), str(later)]
            assert reader.read(cur) == []
    finally:
        writer.close()


def test_a_transaction_running_when_the_reader_starts_is_read_however_long(conn):
    """No window of ids: 20,000 later changes do not push an older transaction out."""
    old = other_connection()
    try:
        with old.cursor() as c:
            early = make_author(c, "early@x")
        bulk = other_connection()
        with bulk.cursor() as c:
            c.execute("INSERT INTO bookstore_author (name, email) "
                      "SELECT 'bulk', 'early-bulk-' || g FROM generate_series(1, 20000) g")
        bulk.commit()
        bulk.close()
        with conn.cursor() as cur:
            reader = ChangelogReader.at_end(cur)
            assert reader.read(cur) == []
            old.commit()
            assert [r.row for r in reader.read(cur)] == [str(early)]
    finally:
        old.close()


def test_prepared_transactions_are_read_when_committed(conn):
    with conn.cursor() as cur:
        cur.execute("SHOW max_prepared_transactions")
        if int(cur.fetchone()[0]) == 0:
            pytest.skip("max_prepared_transactions is 0 on this server")
        reader = ChangelogReader.at_end(cur)
        prepared = other_connection()
        try:
            with prepared.cursor() as c:
                row = make_author(c, "2pc@x")
                c.execute("PREPARE TRANSACTION 'ddpctl-test-2pc'")
            Author.objects.create(name="later", email="2pc-later@x")
            assert len(reader.read(cur)) == 1
            cur.execute("COMMIT PREPARED 'ddpctl-test-2pc'")
            assert [r.row for r in reader.read(cur)] == [str(row)]
        finally:
            prepared.close()


def test_read_cost_is_bounded_behind_an_idle_transaction_and_a_rolled_back_import(conn):
    """What a read sends does not grow with the rows of transactions that rolled back or
    run (issue 9.6: the old reader sent every missed id, 200,000 of them here)."""
    idle, bulk = other_connection(), other_connection()
    try:
        with conn.cursor() as cur:
            reader = ChangelogReader.at_end(cur)
            with idle.cursor() as c:
                idle_row = make_author(c, "idle@x")   # then sits idle in its transaction
            with bulk.cursor() as c:
                c.execute("INSERT INTO bookstore_author (name, email) "
                          "SELECT 'bulk', 'import-' || g FROM generate_series(1, 200000) g")
            marker = Author.objects.create(name="m", email="marker-1@x")
            assert [r.row for r in reader.read(cur)] == [str(marker.pk)]  # import running
            bulk.rollback()
            sizes = []
            for i in range(2, 5):
                marker = Author.objects.create(name="m", email=f"marker-{i}@x")
                assert [r.row for r in reader.read(cur)] == [str(marker.pk)]
                sizes.append(len(cur.query))
            # The statement plus at most one xid per connection the server allows.
            cur.execute("SHOW max_connections")
            connections_allowed = int(cur.fetchone()[0])
            assert len(reader.in_flight) <= connections_allowed
            assert max(sizes) < len(changelog._READ) + 24 * connections_allowed, sizes
            idle.commit()
            assert [r.row for r in reader.read(cur)] == [str(idle_row)]
    finally:
        idle.close()
        bulk.close()


def test_many_to_many_is_recorded_on_the_owner(conn):
    from bookstore.models import Genre
    with conn.cursor() as cur:
        reader = ChangelogReader.at_end(cur)
        author = Author.objects.create(name="A", email="m2m@x")
        book = Book.objects.create(title="t", author=author)
        genre = Genre.objects.create(name="g")
        reader.read(cur)
        book.genres.add(genre)
        rows = reader.read(cur)
        assert [(r.table, r.op, r.row, r.fields) for r in rows] == [
            ("bookstore_book", "U", str(book.pk), ["genres_ids"])]


def test_truncate_is_recorded(conn):
    with conn.cursor() as cur:
        reader = ChangelogReader.at_end(cur)
        cur.execute("TRUNCATE testapp_note")
        assert [(r.table, r.op, r.row) for r in reader.read(cur)] == [("testapp_note", "T", None)]


def test_cursor_plans():
    from ddpctl.livedata.collection import collections
    books = collections.for_model(Book)
    plain = Cursor(books, Book.objects.all())
    joined = Cursor(books, Book.objects.filter(author__email="x"))
    sliced = Cursor(books, Book.objects.order_by("title")[:3])
    changes = ChangeSet()
    changes.add("bookstore_book", "7")
    assert plain.plan(changes) == (False, {"7"})
    assert sliced.plan(changes) == (True, set())
    author_change = ChangeSet()
    author_change.add("bookstore_author", "1")
    assert plain.plan(author_change) == (False, set())
    assert joined.plan(author_change) == (True, set())
    truncate = ChangeSet()
    truncate.add("bookstore_book", None)
    assert plain.plan(truncate) == (True, set())


def test_diff_fields():
    assert diff_fields({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == ({"b": 3, "c": 4}, [])
    assert diff_fields({"a": 1, "b": 2}, {"a": 1}) == ({}, ["b"])
    assert diff_fields({"a": 1}, {"a": True}) == ({"a": True}, [])


def test_serialization():
    import datetime
    import decimal
    import uuid

    from ddpctl.livedata.collection import to_ddp_value
    assert to_ddp_value(decimal.Decimal("9.99")) == "9.99"
    assert to_ddp_value(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert to_ddp_value(datetime.time(12, 30)) == "12:30:00"
    assert to_ddp_value(datetime.timedelta(minutes=2)) == 120.0
    assert to_ddp_value(memoryview(b"ab")) == b"ab"
    from ddpctl.livedata.collection import collections
    author = Author.objects.create(name="S", email="s@x")
    book = Book.objects.create(title="T", author=author, pages=3, published=datetime.date(2020, 1, 2))
    doc_id, fields = collections.for_model(Book).serialize(book)
    assert doc_id == str(book.pk)
    assert fields == {"title": "T", "pages": 3, "blurb": "",
                      "published": datetime.datetime(2020, 1, 2, tzinfo=datetime.UTC),
                      "author_id": str(author.pk), "genres_ids": []}


_WRITERS = 3
_operation = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, _WRITERS - 1), st.integers(1, 3)),
    st.tuples(st.just("undone"), st.integers(0, _WRITERS - 1), st.integers(1, 2)),  # rolled-back savepoint
    st.tuples(st.just("commit"), st.integers(0, _WRITERS - 1), st.just(0)),
    st.tuples(st.just("rollback"), st.integers(0, _WRITERS - 1), st.just(0)),
    st.tuples(st.just("read"), st.just(0), st.just(0)),
)


@pytest.fixture
def writers():
    conns = [other_connection() for _ in range(_WRITERS)]
    yield conns
    for c in conns:
        c.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=st.lists(_operation, max_size=40), start_at=st.integers(0, 8),
       batch_size=st.sampled_from([1, 2, 3, 5000]))
def test_interleaved_transactions_are_read_once_each_when_committed(conn, writers, operations, start_at,
                                                                    batch_size):
    """Whatever the interleaving of writers, each read returns exactly the rows committed
    since the reader started that it has not returned yet: none skipped, none twice,
    none rolled back."""
    pending: list[list[str]] = [[] for _ in writers]  # rows written by each open transaction
    committed: list[str] = []   # rows whose transaction committed after the reader started
    read: list[str] = []
    reader = None
    counter = iter(range(10**6))
    for c in writers:
        c.rollback()

    def catch_up(cur):
        read.extend(r.row for r in reader.catch_up_all(cur) if r.table == "bookstore_author")

    with conn.cursor() as cur:
        # The reader starts after ``start_at`` operations: transactions may be running then.
        operations = operations[:start_at] + [("start", 0, 0)] + operations[start_at:]
        for op, w, n in [*operations, *[("commit", i, 0) for i in range(_WRITERS)]]:
            c = writers[w]
            if op == "start":
                reader = ChangelogReader.at_end(cur)
                reader.batch_size = batch_size
            elif op in ("insert", "undone"):
                with c.cursor() as wc:
                    if op == "undone":
                        wc.execute("SAVEPOINT s")
                    wc.execute("INSERT INTO bookstore_author (name, email) SELECT 'p', "
                               "%s || g FROM generate_series(1, %s) g RETURNING id",
                               [f"prop-{uuid.uuid4().hex}-{next(counter)}-", n])
                    rows = [str(r[0]) for r in wc.fetchall()]
                    if op == "undone":
                        wc.execute("ROLLBACK TO SAVEPOINT s")
                    else:
                        pending[w].extend(rows)
            elif op == "commit":
                c.commit()
                if reader is not None:
                    committed.extend(pending[w])
                pending[w] = []
            elif op == "rollback":
                c.rollback()
                pending[w] = []
            elif op == "read" and reader is not None:
                catch_up(cur)
                assert sorted(read) == sorted(committed)  # nothing committed is left behind
        catch_up(cur)
    assert len(read) == len(set(read))
    assert sorted(read) == sorted(committed)
