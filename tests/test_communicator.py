"""``DDPCommunicator``: the server's connection code run in the test's process on its own
database connection.  Whatever mix of writes (ORM, bulk, raw SQL, methods), flushes,
subscriptions and unsubscriptions a test makes, the communicator ends up holding what the
publications publish, with the messages a real client would get."""
import pytest
from bookstore.models import Author, Book
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddpctl.api import MeteorError
from ddpctl.livedata.observer import observers
from ddpctl.testing import DDPCommunicator, WaitTimeout

pytestmark = pytest.mark.django_db

OPS = st.lists(st.one_of(
    st.tuples(st.just("author"), st.integers(0, 4)),  # create (or rename) author n
    st.tuples(st.just("book"), st.integers(0, 4), st.text("abc ", min_size=1, max_size=5)),
    st.tuples(st.just("retitle"), st.integers(0, 9), st.text("xyz", min_size=1, max_size=5)),
    st.tuples(st.just("delete"), st.integers(0, 9)),
    st.tuples(st.just("bulk_pages"), st.integers(0, 500)),
    st.tuples(st.just("sql_delete_books_of"), st.integers(0, 4)),
    st.tuples(st.just("method_add"), st.integers(0, 4)),
    st.tuples(st.just("flush"),),
    st.tuples(st.just("toggle_sub"),),
), max_size=25)


def _published() -> tuple[dict, dict]:
    authors = {str(a.pk): {"name": a.name, "email": a.email} for a in Author.objects.all()}
    books = {str(b.pk): {"title": b.title, "pages": b.pages, "author_id": str(b.author_id)}
             for b in Book.objects.all()}
    return authors, books


def _books_as_held(comm: DDPCommunicator) -> dict:
    return {doc_id: {k: fields[k] for k in ("title", "pages", "author_id")}
            for doc_id, fields in comm.collections.get("bookstore.book", {}).items()}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(OPS)
def test_the_collections_follow_every_kind_of_write(ops):
    with transaction.atomic():
        with DDPCommunicator() as comm:
            comm.subscribe("AllBooks")
            extra = None  # a second, overlapping subscription (the mergebox keeps shared documents)
            for op in ops:
                books = list(Book.objects.order_by("pk"))
                if op[0] == "author":
                    Author.objects.update_or_create(email=f"a{op[1]}@example.com",
                                                    defaults={"name": f"A{op[1]}x"})
                elif op[0] == "book":
                    author, _ = Author.objects.get_or_create(email=f"a{op[1]}@example.com",
                                                             defaults={"name": f"A{op[1]}"})
                    Book.objects.create(title=op[2], author=author)
                elif op[0] == "retitle" and books:
                    book = books[op[1] % len(books)]
                    book.title = op[2]
                    book.save()
                elif op[0] == "delete" and books:
                    books[op[1] % len(books)].delete()
                elif op[0] == "bulk_pages":
                    Book.objects.update(pages=op[1])
                elif op[0] == "sql_delete_books_of":
                    with connection.cursor() as cursor:
                        cursor.execute("DELETE FROM bookstore_book WHERE author_id IN "
                                       "(SELECT id FROM bookstore_author WHERE email = %s)",
                                       [f"a{op[1]}@example.com"])
                elif op[0] == "method_add":
                    pk = comm.call("books.add", "by method", f"a{op[1]}@example.com")
                    # the write fence: the method's data came before its result
                    assert str(pk) in comm.collections["bookstore.book"]
                elif op[0] == "flush":
                    comm.flush()
                elif op[0] == "toggle_sub":
                    if extra is None:
                        extra = comm.subscribe("BooksByAuthorEmail", "a0@example.com")
                    else:
                        comm.unsubscribe(extra)
                        extra = None
            comm.flush()
            authors, books = _published()
            assert comm.collections.get("bookstore.author", {}) == authors
            assert _books_as_held(comm) == books
        transaction.set_rollback(True)
    assert not observers.all()  # closing stopped every subscription


def test_messages_are_what_a_client_receives_in_order():
    author = Author.objects.create(name="Ann", email="ann@example.com")
    with DDPCommunicator() as comm:
        comm.send({"msg": "sub", "id": "s1", "name": "AllBooks", "params": []})
        assert comm.recv() == {"msg": "added", "collection": "bookstore.author", "id": str(author.pk),
                               "fields": {"name": "Ann", "email": "ann@example.com"}}
        assert comm.recv() == {"msg": "ready", "subs": ["s1"]}
        comm.send({"msg": "method", "id": "m1", "method": "books.count", "params": []})
        assert comm.recv() == {"msg": "updated", "methods": ["m1"]}
        assert comm.recv() == {"msg": "result", "id": "m1", "result": 0}
        comm.send_raw("[1, 2]")  # JSON, not a DDP message
        assert comm.recv() == {"msg": "error", "reason": "Bad request"}
        Author.objects.filter(pk=author.pk).update(name="Anne")
        assert comm.flush() == [{"msg": "changed", "collection": "bookstore.author", "id": str(author.pk),
                                 "fields": {"name": "Anne"}}]
        assert comm.flush() == []


def test_a_user_and_login_changes_rerun_the_subscriptions():
    users = get_user_model()._default_manager
    alice = users.create_user("alice", password="pw")
    bob = users.create_user("bob", password="pw")
    with DDPCommunicator(user=alice) as comm:
        comm.subscribe("MyBooks")
        mine = comm.call("books.add", "Alice's", "a@example.com")
        assert set(comm.collections["my_books"]) == {str(mine)}
        assert Book.objects.get(pk=mine).owner == alice
        comm.login(bob)
        comm.wait_for_collection("my_books", {})
        theirs = Book.objects.create(title="Bob's", author=Book.objects.get(pk=mine).author, owner=bob)
        comm.wait_for_collection("my_books", lambda docs: set(docs) == {str(theirs.pk)})
        comm.logout()
        comm.wait_for_collection("my_books", {})


def test_errors_arrive_as_a_client_gets_them():
    with DDPCommunicator() as comm:
        with pytest.raises(MeteorError) as bad:
            comm.call("books.add", "", "a@example.com")
        assert (bad.value.error, bad.value.reason) == (400, "A book needs a title")
        with pytest.raises(MeteorError) as missing:
            comm.subscribe("NoSuchPublication")
        assert missing.value.error == 404
        with pytest.raises(MeteorError) as match:
            comm.subscribe("BooksByAuthorEmail", 42)
        assert match.value.error == 400
        assert Book.objects.count() == 0  # the failed method's writes were undone


def test_a_timeout_says_what_was_awaited_and_what_came():
    Author.objects.create(name="Ann", email="ann@example.com")
    with DDPCommunicator(timeout=0.3) as comm:
        comm.subscribe("AllBooks")
        with pytest.raises(WaitTimeout) as timed_out:
            comm.wait_for_collection("bookstore.book", lambda docs: len(docs) == 1)
    report = str(timed_out.value)
    assert report.startswith("timed out after 0.3 s waiting for collection 'bookstore.book' to satisfy")
    assert '"msg": "added", "collection": "bookstore.author"' in report
    assert "'bookstore.author': 1 document(s)" in report
    assert isinstance(timed_out.value, AssertionError)


def test_the_connection_handle_and_close():
    with DDPCommunicator(headers={"User-Agent": "pytest"}, client_address="10.1.2.3") as comm:
        assert comm.handle.http_headers["user-agent"] == "pytest"
        assert comm.handle.client_address == "10.1.2.3"
        assert comm.handle.id == comm.session
        comm.subscribe("AllBooks")
        assert observers.all()
    assert comm.closed
    assert not observers.all()
    with pytest.raises(RuntimeError, match="not open"):
        comm.call("books.count")


@pytest.mark.django_db(transaction=True)
def test_committed_writes_reach_it_too():
    with DDPCommunicator() as comm:
        comm.subscribe("AllBooks")
        author = Author.objects.create(name="Committed", email="c@example.com")
        comm.wait_for_collection("bookstore.author", {str(author.pk): {"name": "Committed",
                                                                       "email": "c@example.com"}})


def test_the_tests_own_changes_are_dispatched_once_however_many():
    # The reader returns the test transaction's rows again while it runs (in flight to it):
    # each goes to the observers once, and a poll ends even when they outnumber a batch.
    with DDPCommunicator() as comm:
        comm.subscribe("AllBooks")
        dispatcher = comm._server.dispatcher
        dispatcher.reader.batch_size = 3
        Author.objects.bulk_create([Author(name=f"A{i}", email=f"{i}@example.com") for i in range(8)])
        assert [dispatcher.poll() for _ in range(3)] == [8, 0, 0]
        assert [m["msg"] for m in comm.flush()] == ["added"] * 8  # sent by the first poll
        assert comm.flush() == []
        assert len(comm.collections["bookstore.author"]) == 8


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["send", "call", "subscribe"]), max_size=8))
def test_wait_for_message_walks_forward_through_everything_received(steps):
    # Whatever read the messages (a call, a subscribe), successive waits for a result return
    # every result once, in the order the calls were made; then there is none to wait for.
    with transaction.atomic():
        with DDPCommunicator(timeout=0.2) as comm:
            sent = []
            for step in steps:
                if step == "send":
                    sent.append(comm.method("books.count"))
                elif step == "call":  # what call() does: send, then read until the result
                    sent.append(comm.method("books.count"))
                    assert comm.wait_for_result(sent[-1]) == 0
                else:
                    comm.subscribe("AllGenres")
            got = [comm.wait_for_message({"msg": "result"})["id"] for _ in sent]
            assert got == sent
            with pytest.raises(WaitTimeout, match='waiting for a message matching {"msg": "result"}'):
                comm.wait_for_message({"msg": "result"})
        transaction.set_rollback(True)
