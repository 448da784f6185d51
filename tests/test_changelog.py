"""The changelog reader against a real PostgreSQL (pytest-django's test database,
which has the capture triggers: ``post_migrate`` installs them)."""
import psycopg2
import pytest
from bookstore.models import Author, Book
from django.db import connection

from ddpctl.livedata import capture
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


def test_slow_transaction_with_a_lower_id_is_not_skipped(conn):
    with conn.cursor() as cur:
        reader = ChangelogReader.at_end(cur)
        slow = other_connection()
        with slow.cursor() as slow_cur:
            make_author(slow_cur, "slow@x")  # takes the lower id, stays uncommitted
            fast = other_connection()
            with fast.cursor() as fast_cur:
                make_author(fast_cur, "fast@x")
            fast.commit()
            first = reader.read(cur)
            assert len(first) == 1 and reader.gaps  # the slow id is remembered as a gap
            assert reader.read(cur) == []            # still in flight: kept, not dropped
            assert reader.gaps
        slow.commit()
        second = reader.read(cur)
        assert len(second) == 1 and second[0].id < first[0].id  # commit order, not id order
        assert reader.gaps == {}
        slow.close()
        fast.close()


def test_rolled_back_ids_are_dropped_from_gaps(conn):
    with conn.cursor() as cur:
        reader = ChangelogReader.at_end(cur)
        doomed = other_connection()
        with doomed.cursor() as c:
            make_author(c, "doomed@x")
        doomed.rollback()
        doomed.close()
        Author.objects.create(name="B", email="after@x")
        rows = reader.read(cur)
        assert len(rows) == 1 and reader.gaps == {}


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
