"""Multiplexed observers (issue 11): many subscriptions of one SQL shape, different params.

Observers whose querysets differ only in their parameters -- the params of a publication,
or the user id inside a per-user ``Collection.visible`` -- are to be refreshed with one
query per (shape, batch) instead of one query each.  These tests hold that rewrite to what
must not change and to what must:

* equivalence: dozens of subscriptions of five shapes (a filter through a join, several
  params with a range, a sliced and ordered top 3, per-user visibility through ownership
  and a membership table, many-to-many fields and a filter through one), some shared,
  several users; seeded random writes (inserts, updates moving rows in and out, deletes,
  joined-table and many-to-many changes, several writes per transaction); after each round
  every client's view equals a fresh ORM query of its subscriptions, serialized by
  ``Collection.serialize``;
* per-user visibility: users on their own connections, one committed write at a time; every
  ``added`` / ``changed`` a client receives is checked against what its user may see at
  that point, every ``removed`` against what it may not;
* cost: the SQL transactions per change, from PostgreSQL's own statistics, are the same
  with 10 and with 500 distinct subscriptions.  Today's engine runs one query per observer
  per batch, so this test fails until the multiplexed engine lands (that is intended).

Expected views are computed in this process with the ORM on the live database (alias
``LIVE``) from the publications' own ``get_queries`` and the collections' ``visible`` /
``prepare`` / ``serialize``: nothing of the observer machinery.
"""
from __future__ import annotations

import json
import random
import statistics
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from bookstore.ddp import BooksByAuthorEmail
from bookstore.models import Author, Book, Genre
from conftest import eventually, wait_for
from django.contrib.auth import get_user_model
from django.db import connections, transaction
from django.db.models import F
from testapp.ddp import BooksInGenre, BooksInRange, TopBooksOfAuthor, VisibleCards
from testapp.models import Board, BoardMember, Card, Label
from websocket import WebSocketTimeoutException

from ddpctl.ddp.ejson import from_json_value, to_json_value
from ddpctl.livedata.collection import collections
from ddpctl.livedata.publication import Publication
from ddpctl.testing import DDPClient

LIVE = "multiplex_live"  # the ORM alias of the database the server under test uses
BOOK, AUTHOR, CARD = "bookstore.book", "bookstore.author", "testapp.card"
TABLES = ("bookstore_book_genres, bookstore_book, bookstore_author, bookstore_genre, testapp_card_labels, "
          "testapp_card, testapp_label, testapp_boardmember, testapp_board")
View = dict[str, dict[str, dict[str, Any]]]  # collection name -> document id -> fields


# -- the ORM on the live database ----------------------------------------------------------

@pytest.fixture(scope="module")
def orm(live_database_url, django_db_blocker):
    """Django's ORM on the live database, as alias ``LIVE`` (tables emptied before and after)."""
    name = urlsplit(live_database_url).path.lstrip("/")
    connections.settings[LIVE] = {**connections.settings["default"], "NAME": name}
    try:
        with django_db_blocker.unblock():
            truncate()
            yield
            truncate()
    finally:
        connections[LIVE].close()
        del connections[LIVE]
        del connections.settings[LIVE]


def truncate() -> None:
    with connections[LIVE].cursor() as cursor:
        cursor.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")


def users(names: Iterable[str]) -> dict[str, Any]:
    """``{username: User}`` on the live database, created if needed."""
    model = get_user_model()
    return {name: model.objects.using(LIVE).get_or_create(username=name)[0] for name in names}


# -- subscriptions and what they must show -------------------------------------------------

@dataclass(frozen=True)
class Sub:
    publication: type[Publication]
    params: tuple[Any, ...]
    user: str | None = None  # the username its connection is logged in as

    def __str__(self) -> str:
        who = f" as {self.user}" if self.user else ""
        return f"{self.publication.__name__}{self.params!r}{who}"


def canonical(collection: str, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` as a client holds them (EJSON round trip), many-to-many id lists sorted
    (a many-to-many relation has no order)."""
    doc = from_json_value(to_json_value(fields))
    for many in collections.by_name(collection).many:
        key = f"{many.name}_ids"
        if key in doc:
            doc[key] = sorted(doc[key], key=int)
    return doc


def expected_view(sub: Sub, people: dict[str, Any]) -> View:
    """What ``sub`` must show now: its publication's querysets, fresh from the database,
    through the collection's ``visible`` and ``prepare``, serialized by ``serialize``."""
    view: View = {}
    user = people[sub.user] if sub.user else None
    for queryset in sub.publication(None).get_queries(*sub.params):
        collection = collections.for_model(queryset.model)
        queryset = collection.prepare(collection.visible(queryset.using(LIVE), user))
        docs = view.setdefault(collection.name, {})
        for obj in queryset:
            doc_id, fields = collection.serialize(obj)
            docs[doc_id] = canonical(collection.name, fields)
    return view


def union(views: Iterable[View]) -> View:
    out: View = {}
    for view in views:
        for name, docs in view.items():
            out.setdefault(name, {}).update(docs)
    return {name: docs for name, docs in out.items() if docs}


def client_view(client: DDPClient) -> View:
    return {name: {i: canonical(name, d) for i, d in docs.items()}
            for name, docs in client.collections.items() if docs and name != "users"}


def describe_difference(got: View, want: View, limit: int = 6) -> str:
    lines = []
    for name in sorted(set(got) | set(want)):
        have, need = got.get(name, {}), want.get(name, {})
        for doc_id in sorted(set(have) | set(need), key=str):
            if doc_id not in have:
                lines.append(f"  {name} {doc_id} missing, should be {need[doc_id]}")
            elif doc_id not in need:
                lines.append(f"  {name} {doc_id} should not be there: {have[doc_id]}")
            elif have[doc_id] != need[doc_id]:
                lines.append(f"  {name} {doc_id} is {have[doc_id]}, should be {need[doc_id]}")
    more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more


class RecordingClient(DDPClient):
    """A DDP client that keeps every message it receives (``log``) and knows its subscriptions."""

    def __init__(self, url: str, user: str | None = None, **options: Any) -> None:
        super().__init__(url, **options)
        self.user = user
        self.subs: list[Sub] = []
        self.log: list[dict[str, Any]] = []

    def recv(self) -> dict[str, Any]:
        msg = super().recv()
        self.log.append(msg)
        return msg

    def subscribe_all(self, subs: list[Sub]) -> None:
        """Send every ``sub`` at once, then wait until each is ready (fail on a ``nosub``)."""
        waiting = {}
        for sub in subs:
            assert sub.user == self.user, (sub, self.user)
            sub_id = self.new_id()
            waiting[sub_id] = sub
            self.send({"msg": "sub", "id": sub_id, "name": sub.publication.name,
                       "params": to_json_value(list(sub.params))})
        self.subs.extend(subs)
        while waiting:
            msg = self.recv()
            if msg.get("msg") == "ready":
                for sub_id in msg["subs"]:
                    waiting.pop(sub_id, None)
            elif msg.get("msg") == "nosub" and msg.get("id") in waiting:
                raise AssertionError(f"{waiting[msg['id']]} failed: {msg}")


def connect(url: str, user: str | None, subs: list[Sub]) -> RecordingClient:
    client = RecordingClient(url, user)
    client.connect()
    if user is not None:
        client.call("login_as", user)
    client.subscribe_all(subs)
    return client


def fence(clients: list[RecordingClient]) -> None:
    """Return once every change committed before the call has reached every client: each
    calls a method at once, and the server sends a method's ``updated`` only after the data
    of every change committed before it (its write fence)."""
    pending = []
    for client in clients:
        method_id = client.new_id()
        client.send({"msg": "method", "method": "echo", "id": method_id, "params": []})
        pending.append((client, method_id))
    for client, method_id in pending:
        result = updated = False
        while not (result and updated):
            msg = client.recv()
            if msg.get("msg") == "result" and msg.get("id") == method_id:
                assert "error" not in msg, msg
                result = True
            elif msg.get("msg") == "updated" and method_id in msg.get("methods", []):
                updated = True


def check_views(clients: list[RecordingClient], people: dict[str, Any], context: str) -> None:
    """Every client shows exactly what its subscriptions must show now (``context`` goes in
    the failure message)."""
    cache: dict[Sub, View] = {}
    for client in clients:
        for sub in client.subs:
            if sub not in cache:
                cache[sub] = expected_view(sub, people)
        want = union(cache[sub] for sub in client.subs)
        got = client_view(client)
        if got == want:
            continue
        try:  # late rather than wrong?  (either way a failure: the write fence was passed)
            wait_for(client, lambda c, want=want: client_view(c) == want, timeout=3)
            late = "it arrived only after the write fence"
        except (AssertionError, WebSocketTimeoutException):
            late = "still wrong 3 s later"
        raise AssertionError(
            f"{context}\nclient of {', '.join(map(str, client.subs))} after the write fence ({late}):\n"
            f"{describe_difference(got, want)}")


# -- 1. randomized equivalence -------------------------------------------------------------

EMAILS = [f"e{i}@mx.test" for i in range(6)]
GENRES = [f"g{i}" for i in range(5)]
PREFIXES = ["A", "B", "C"]
PEOPLE = [f"mx-u{i}" for i in range(4)]
LABELS = ["red", "green", "blue"]


class World:
    """Random writes through the ORM on the live database; each returns what it did."""

    def __init__(self, rng: random.Random, people: dict[str, Any]) -> None:
        self.rng = rng
        self.people = list(people.values())
        self.serial = 0
        self._first = rng.sample(sorted(set(self.OPERATIONS)), len(set(self.OPERATIONS)))

    def _next(self) -> int:
        self.serial += 1
        return self.serial

    def _pick(self, queryset):
        ids = list(queryset.using(LIVE).order_by("pk").values_list("pk", flat=True))
        return queryset.model.objects.using(LIVE).get(pk=self.rng.choice(ids)) if ids else None

    def _unused(self, pool: list[str], used: Iterable[str]) -> str | None:
        free = sorted(set(pool) - set(used))
        return self.rng.choice(free) if free else None

    def populate(self) -> None:
        rng = self.rng
        for email in rng.sample(EMAILS, 4):
            Author.objects.using(LIVE).create(name=f"Au{self._next()}", email=email)
        for name in rng.sample(GENRES, 3):
            Genre.objects.using(LIVE).create(name=name)
        for _ in range(14):
            self.insert_book()
        boards = [Board.objects.using(LIVE).create(name=f"board{i}") for i in range(3)]
        for person in self.people:
            for board in rng.sample(boards, rng.randrange(0, 3)):
                BoardMember.objects.using(LIVE).create(user=person, board=board)
        for name in LABELS:
            Label.objects.using(LIVE).create(name=name)
        for _ in range(10):
            self.insert_card()

    # books, authors, genres

    def insert_book(self) -> str:
        author = self._pick(Author.objects.all())
        if author is None:
            return self.insert_author()
        book = Book.objects.using(LIVE).create(
            title=f"{self.rng.choice(PREFIXES)}-{self._next()}", author=author, pages=self.rng.randrange(100))
        genres = list(Genre.objects.using(LIVE).order_by("pk"))
        book.genres.add(*self.rng.sample(genres, min(len(genres), self.rng.randrange(3))))
        return f"insert book {book.pk} ({book.title}, {book.pages} pages, author {author.email})"

    def set_pages(self) -> str | None:
        book = self._pick(Book.objects.all())
        if book is None:
            return None
        book.pages = self.rng.randrange(100)
        book.save(update_fields=["pages"])
        return f"book {book.pk} pages = {book.pages}"

    def set_prefix(self) -> str | None:
        book = self._pick(Book.objects.all())
        if book is None:
            return None
        book.title = f"{self.rng.choice(PREFIXES)}-{self._next()}"
        book.save(update_fields=["title"])
        return f"book {book.pk} title = {book.title}"

    def set_author(self) -> str | None:
        book, author = self._pick(Book.objects.all()), self._pick(Author.objects.all())
        if book is None or author is None:
            return None
        book.author = author
        book.save(update_fields=["author"])
        return f"book {book.pk} author = {author.email}"

    def delete_book(self) -> str | None:
        book = self._pick(Book.objects.all())
        if book is None:
            return None
        pk = book.pk
        book.delete()
        return f"delete book {pk}"

    def add_genre(self) -> str | None:
        book, genre = self._pick(Book.objects.all()), self._pick(Genre.objects.all())
        if book is None or genre is None:
            return None
        book.genres.add(genre)
        return f"book {book.pk} + genre {genre.name}"

    def remove_genre(self) -> str | None:
        book = self._pick(Book.objects.filter(genres__isnull=False).distinct())
        if book is None:
            return None
        genre = self.rng.choice(list(book.genres.order_by("pk")))
        book.genres.remove(genre)
        return f"book {book.pk} - genre {genre.name}"

    def rename_genre(self) -> str | None:
        genre = self._pick(Genre.objects.all())
        name = self._unused(GENRES, Genre.objects.using(LIVE).values_list("name", flat=True))
        if genre is None or name is None:
            return None
        old, genre.name = genre.name, name
        genre.save(update_fields=["name"])
        return f"genre {old} renamed {name}"

    def change_email(self) -> str | None:
        """A joined-table change: every book of the author moves between subscriptions."""
        author = self._pick(Author.objects.all())
        email = self._unused(EMAILS, Author.objects.using(LIVE).values_list("email", flat=True))
        if author is None or email is None:
            return None
        old, author.email = author.email, email
        author.save(update_fields=["email"])
        return f"author {old} email = {email}"

    def rename_author(self) -> str | None:
        author = self._pick(Author.objects.all())
        if author is None:
            return None
        author.name = f"Au{self._next()}"
        author.save(update_fields=["name"])
        return f"author {author.email} name = {author.name}"

    def insert_author(self) -> str:
        email = self._unused(EMAILS, Author.objects.using(LIVE).values_list("email", flat=True))
        if email is None:
            return self.rename_author() or "nothing"
        Author.objects.using(LIVE).create(name=f"Au{self._next()}", email=email)
        return f"insert author {email}"

    def delete_author(self) -> str | None:
        author = self._pick(Author.objects.all())
        if author is None:
            return None
        email = author.email
        author.delete()  # and its books
        return f"delete author {email} and its books"

    # cards, memberships, labels

    def insert_card(self) -> str:
        board = self._pick(Board.objects.all())
        card = Card.objects.using(LIVE).create(board=board, owner=self.rng.choice(self.people),
                                               title=f"card{self._next()}", points=self.rng.randrange(10))
        labels = list(Label.objects.using(LIVE).order_by("pk"))
        card.labels.add(*self.rng.sample(labels, self.rng.randrange(3)))
        return f"insert card {card.pk} (board {board.pk}, owner {card.owner.username}, {card.points} points)"

    def set_points(self) -> str | None:
        card = self._pick(Card.objects.all())
        if card is None:
            return None
        card.points = self.rng.randrange(10)
        card.save(update_fields=["points"])
        return f"card {card.pk} points = {card.points}"

    def set_owner(self) -> str | None:
        card = self._pick(Card.objects.all())
        if card is None:
            return None
        card.owner = self.rng.choice(self.people)
        card.save(update_fields=["owner"])
        return f"card {card.pk} owner = {card.owner.username}"

    def set_board(self) -> str | None:
        card, board = self._pick(Card.objects.all()), self._pick(Board.objects.all())
        if card is None:
            return None
        card.board = board
        card.save(update_fields=["board"])
        return f"card {card.pk} board = {board.pk}"

    def delete_card(self) -> str | None:
        card = self._pick(Card.objects.all())
        if card is None:
            return None
        pk = card.pk
        card.delete()
        return f"delete card {pk}"

    def add_member(self) -> str:
        person, board = self.rng.choice(self.people), self._pick(Board.objects.all())
        BoardMember.objects.using(LIVE).create(user=person, board=board)
        return f"{person.username} joins board {board.pk}"

    def remove_member(self) -> str | None:
        member = self._pick(BoardMember.objects.all())
        if member is None:
            return None
        text = f"{member.user.username} leaves board {member.board_id}"
        member.delete()
        return text

    def add_label(self) -> str | None:
        card, label = self._pick(Card.objects.all()), self._pick(Label.objects.all())
        if card is None:
            return None
        card.labels.add(label)
        return f"card {card.pk} + label {label.name}"

    def remove_label(self) -> str | None:
        card = self._pick(Card.objects.filter(labels__isnull=False).distinct())
        if card is None:
            return None
        label = self.rng.choice(list(card.labels.order_by("pk")))
        card.labels.remove(label)
        return f"card {card.pk} - label {label.name}"

    OPERATIONS = ["insert_book", "set_pages", "set_pages", "set_prefix", "set_author", "delete_book",
                  "add_genre", "remove_genre", "rename_genre", "change_email", "change_email",
                  "rename_author", "insert_author", "delete_author", "insert_card", "set_points",
                  "set_owner", "set_board", "delete_card", "add_member", "remove_member",
                  "add_label", "remove_label"]

    def random_write(self) -> str:
        """Every kind of write once, in a random order, then random ones."""
        while True:
            name = self._first.pop() if self._first else self.rng.choice(self.OPERATIONS)
            done = getattr(self, name)()
            if done is not None:
                return done


def equivalence_subscriptions(rng: random.Random) -> list[tuple[str | None, list[Sub]]]:
    """``[(username or None, subscriptions of one connection)]``: one book publication and one
    card publication per connection (so no two of its subscriptions publish one collection
    and each view is exactly its subscriptions'), dozens in all, some of them shared."""
    books: list[tuple[type[Publication], tuple]] = [(BooksByAuthorEmail, (e,)) for e in EMAILS[:5]]
    books += [(TopBooksOfAuthor, (e,)) for e in EMAILS[1:5]]
    books += [(BooksInGenre, (g,)) for g in GENRES[:4]]
    for _ in range(5):
        low = rng.randrange(0, 70)
        books.append((BooksInRange, (rng.choice(PREFIXES), low, low + rng.randrange(10, 60))))
    books += rng.sample(books, 4)  # the same params on another connection: a shared observer
    rng.shuffle(books)
    out = []
    for i, (publication, params) in enumerate(books):
        user = None if i % 9 == 8 else PEOPLE[i % len(PEOPLE)]  # a few logged out
        cards = Sub(VisibleCards, (rng.choice([0, 3, 6]),), user)
        out.append((user, [Sub(publication, params, user), cards]))
    return out


SEEDS = (1, 2, 3)
ROUNDS = 4  # per seed: 2 or 3 transactions of 1 to 3 writes each, then the checks


def test_every_view_equals_a_fresh_query_after_random_writes(start_server, orm, ddpctl):
    """The clients subscribe once (to data of the first seed); each further seed replaces all
    data live, in one transaction (TRUNCATE, whose ids restart, and new rows)."""
    server = start_server("--node-heartbeat", "0.3")
    people = users(PEOPLE)
    plan = equivalence_subscriptions(random.Random(0))
    assert sum(len(subs) for _, subs in plan) >= 40
    truncate()
    clients: list[RecordingClient] = []
    try:
        for seed in SEEDS:
            rng = random.Random(seed)
            world = World(rng, people)
            with transaction.atomic(using=LIVE):
                truncate()
                world.populate()
            if clients:
                fence(clients)
            else:
                clients = [connect(server.ws_url, user, subs) for user, subs in plan]
                assert_all_multiplexed(ddpctl, clients)
            history: list[str] = []
            check_views(clients, people, f"seed {seed}, its initial data")
            for round_no in range(ROUNDS):
                for _ in range(rng.randrange(2, 4)):
                    with transaction.atomic(using=LIVE):
                        done = [world.random_write() for _ in range(rng.randrange(1, 4))]
                    history.append(f"round {round_no}: " + "; ".join(done))
                fence(clients)
                check_views(clients, people,
                            f"seed {seed}, after round {round_no}; writes so far:\n  " + "\n  ".join(history))
        # the writes did move documents into and out of views, and change documents in view
        received = Counter(m.get("msg") for client in clients for m in client.log)
        assert min(received["added"], received["changed"], received["removed"]) >= 50, received
    finally:
        for client in clients:
            client.close()


def assert_all_multiplexed(ddpctl, clients: list[RecordingClient]) -> None:
    """Every subscription of ``clients`` refreshes multiplexed (``ddpctl subs ls``): the
    test compares the multiplexed path, not the per-observer one, with fresh queries."""
    sessions = {client.session for client in clients}
    expected = sum(len(client.subs) for client in clients)

    def modes():
        rows = json.loads(ddpctl("subs", "ls", "--json").stdout)
        found = [r["refresh"] for r in rows if r["connection"] in sessions]
        return found if len(found) == expected else None

    assert set(eventually(modes)) == {"multiplexed"}


# -- 2. per-user visibility stays exact ----------------------------------------------------

VIEWERS = [f"mv-u{i}" for i in range(6)]
STRANGER = "mv-stranger"  # owns nothing, member of nothing: must never receive a card


def test_no_user_is_ever_sent_a_card_it_may_not_see(start_server, orm):
    """Owners and board memberships change one committed write at a time, each delivered to
    every client before the next: every message a client received in between must agree
    with what its user may see after that write."""
    server = start_server()
    rng = random.Random(11)
    truncate()
    people = users([*VIEWERS, STRANGER])
    members = [people[name] for name in VIEWERS]
    world = World(rng, {name: people[name] for name in VIEWERS})
    with transaction.atomic(using=LIVE):
        boards = [Board.objects.using(LIVE).create(name=f"board{i}") for i in range(3)]
        for person in members:
            for board in rng.sample(boards, rng.randrange(0, 2)):
                BoardMember.objects.using(LIVE).create(user=person, board=board)
        for name in LABELS:
            Label.objects.using(LIVE).create(name=name)
        for _ in range(8):
            world.insert_card()
    # a connection per user (the stranger's too), two more for u0 (one shares the observer of
    # its first), one more for u1, and one logged out
    plan = [(name, [Sub(VisibleCards, (0,), name)]) for name in [*VIEWERS, STRANGER]]
    plan += [(user, [Sub(VisibleCards, (points,), user)])
             for user, points in [(VIEWERS[0], 0), (VIEWERS[0], 4), (VIEWERS[1], 4), (None, 0)]]
    clients = [connect(server.ws_url, user, subs) for user, subs in plan]
    writes = ["set_owner", "set_owner", "set_board", "add_member", "remove_member", "set_points",
              "insert_card", "delete_card", "add_label", "remove_label"]
    history: list[str] = []
    checked = Counter()
    try:
        for step in range(30):
            if step:  # step 0 checks the initial documents
                with transaction.atomic(using=LIVE):
                    done = None
                    while done is None:
                        done = getattr(world, rng.choice(writes))()
                history.append(done)
                fence(clients)
            context = f"after write {step}; writes:\n  " + "\n  ".join(history)
            now = {sub: union([expected_view(sub, people)]) for sub in {client.subs[0] for client in clients}}
            for client in clients:
                (sub,) = client.subs
                checked += check_messages(client, now[sub].get(CARD, {}), sub, context)
                got, want = client_view(client), now[sub]
                assert got == want, f"{context}\n{sub} after the fence:\n{describe_difference(got, want)}"
        # the writes did move cards into and out of views, and change cards in view
        assert min(checked["added"], checked["removed"], checked["changed"]) >= 5, checked
    finally:
        for client in clients:
            client.close()


def check_messages(client: RecordingClient, visible: dict[str, dict[str, Any]], sub: Sub,
                   context: str) -> Counter:
    """Each data message received since the last check agrees with what the user may see now
    (the writes were committed one at a time, each delivered before the next); how many of
    each kind there were."""
    kinds: Counter = Counter()
    for msg in client.log:
        kind, doc_id = msg.get("msg"), msg.get("id")
        if kind not in ("added", "changed", "removed") or msg.get("collection") == "users":
            continue  # (``users``: the logged-in user's own document, from ddpctl.accounts)
        kinds[kind] += 1
        problem = None
        assert msg["collection"] == CARD, msg
        if kind == "removed":
            if doc_id in visible:
                problem = "removed a card it may still see"
        elif doc_id not in visible:
            problem = "was sent a card it may not see"
        else:
            fields = canonical(CARD, {**visible[doc_id], **from_json_value(msg.get("fields", {}))})
            if fields != visible[doc_id] or (kind == "added" and set(msg.get("fields", {})) != set(fields)):
                problem = f"was sent fields that are not the card's: should be {visible[doc_id]}"
            elif set(msg.get("cleared", [])) & set(visible[doc_id]):
                problem = "had a field of the card cleared"
        if problem:
            raise AssertionError(f"{context}\n{sub} {problem}: {msg}")
    client.log.clear()
    return kinds


# -- 3. statements per change do not grow with the number of subscriptions ------------------

SMALL, LARGE = 10, 500
MEASURED = 3  # changes measured at each size, after a warm-up change; their median counts
SLACK = 3  # transactions per change by which the large figure may exceed the small one
KINDS = ("pages", "insert", "author")  # a row of the published table, a new row, a joined table


class Statistics:
    """PostgreSQL's cumulative statistics of the live database.

    Transactions (``xact_commit``, ``xact_rollback``) and new sessions of ``pg_stat_database``
    are read from a connection to another database, so reading them counts nothing.  Scans
    of the published tables (``pg_stat_user_tables``, readable only from inside the
    database) are read by the connection that also writes: one transaction per reading.
    A backend flushes its statistics at the end of a transaction at most once a second (an
    idle one up to 10 s later): readings are taken once they stop moving, and this
    connection flushes its own at once (``pg_stat_force_next_flush()``, PostgreSQL 15+)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.dbname = parts.path.lstrip("/")
        self.stats = psycopg2.connect(urlunsplit(parts._replace(path="/postgres")))
        self.stats.autocommit = True
        self.live = psycopg2.connect(url)
        self.live.autocommit = True
        with self.live.cursor() as cur:
            cur.execute("SHOW server_version_num")
            self._flush = "SELECT pg_stat_force_next_flush(); " if int(cur.fetchone()[0]) >= 150000 else ""

    def close(self) -> None:
        self.stats.close()
        self.live.close()

    def database(self) -> tuple[int, int, int]:
        """``(commits, rollbacks, sessions)`` of the live database so far."""
        with self.stats.cursor() as cur:
            cur.execute("SELECT pg_stat_clear_snapshot(); SELECT xact_commit, xact_rollback, sessions "
                        "FROM pg_stat_database WHERE datname = %s", [self.dbname])
            return cur.fetchone()

    def scans(self) -> int:
        """Sequential and index scans of the published tables so far."""
        with self.live.cursor() as cur:
            cur.execute(self._flush + "SELECT sum(seq_scan + coalesce(idx_scan, 0)) FROM pg_stat_user_tables "
                        "WHERE relname IN ('bookstore_book', 'bookstore_author', 'bookstore_book_genres')")
            return int(cur.fetchone()[0])

    def write(self, statement: str, params: list[Any]) -> None:
        """One committed statement (one transaction, its statistics flushed at once)."""
        with self.live.cursor() as cur:
            cur.execute(self._flush + statement, params)

    def settled(self, timeout: float = 15.0) -> tuple[int, int, int, int]:
        """``(commits, rollbacks, sessions, scans)`` once two readings 0.25 s apart agree."""
        last = self.database()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = self.database()
            if now == last:
                break
            last = now
        return (*last, self.scans())


@dataclass
class Figures:
    """Per measured change: what PostgreSQL counted between the readings around it."""

    transactions: list[int] = field(default_factory=list)  # commits + rollbacks
    rollbacks: list[int] = field(default_factory=list)
    sessions: list[int] = field(default_factory=list)  # connections opened
    scans: list[int] = field(default_factory=list)  # of the published tables
    seconds: list[float] = field(default_factory=list)  # commit to delivery

    @property
    def median(self) -> float:
        return statistics.median(self.transactions)

    def add(self, before: tuple[int, ...], after: tuple[int, ...], seconds: float) -> None:
        commits, rollbacks, sessions, scans = (b - a for a, b in zip(before, after, strict=True))
        self.transactions.append(commits + rollbacks)
        self.rollbacks.append(rollbacks)
        self.sessions.append(sessions)
        self.scans.append(scans)
        self.seconds.append(round(seconds, 2))

    def __str__(self) -> str:
        return (f"transactions {self.transactions} (of which rollbacks {self.rollbacks}), sessions "
                f"{self.sessions}, table scans {self.scans}, delivered in {self.seconds} s")


def change(stats: Statistics, client: DDPClient, author: int, kind: str) -> float:
    """Commit one one-row change about the books of author ``author``; return once its
    subscriber has it (the write fence), after how many seconds."""
    email = f"s{author}@mx.test"
    started = time.monotonic()
    if kind == "pages":
        stats.write("UPDATE bookstore_book SET pages = pages + 1 WHERE id = (SELECT min(b.id) "
                    "FROM bookstore_book b JOIN bookstore_author a ON a.id = b.author_id WHERE a.email = %s)",
                    [email])
    elif kind == "insert":
        stats.write("INSERT INTO bookstore_book (title, author_id, pages, blurb) "
                    "SELECT 'new', id, 7, '' FROM bookstore_author WHERE email = %s", [email])
    else:  # every observer of the shape reads authors (the join)
        stats.write("UPDATE bookstore_author SET name = name || '+' WHERE email = %s", [email])
    expected = {"pages": lambda: sum(b["pages"] for b in client.collections[BOOK].values()),
                "insert": lambda: len(client.collections[BOOK]),
                "author": lambda: "".join(a["name"] for a in client.collections[AUTHOR].values())}[kind]
    seen = expected()
    client.call("echo")  # the write fence
    seconds = time.monotonic() - started
    assert expected() != seen, f"the {kind} change of {email}'s books did not reach its subscriber"
    return seconds


def measure(stats: Statistics, client: DDPClient, size: int, bound: float | None = None) -> Figures:
    """Figures of up to ``MEASURED`` changes, one at a time, after a warm-up change, with
    ``size`` subscriptions; stops early once the median is decided against ``bound``."""
    time.sleep(1.1)
    client.call("pg_sleep", 0)  # the user lane's connection flushes what subscribing left pending
    figures = Figures()
    before = stats.settled()
    for i in range(MEASURED + 1):
        seconds = change(stats, client, (7 * i) % size, KINDS[i % len(KINDS)])
        time.sleep(1.1)  # then every backend flushes at the end of its next transaction
        after = stats.settled()
        if i:  # the warm-up change also carries what the last subscriptions left pending
            figures.add(before, after, seconds)
        before = after
        if bound is not None and figures.transactions:
            within = sum(t <= bound for t in figures.transactions)
            if max(within, len(figures.transactions) - within) > MEASURED // 2:
                break  # the median is on one side of the bound whatever comes next
    return figures


def test_statements_per_change_do_not_grow_with_subscriptions(start_server, orm, live_database_url):
    """Expected to fail until observers are multiplexed: today every observer runs its own
    query (in its own transaction, on a new connection) for every batch."""
    truncate()
    with connections[LIVE].cursor() as cursor:
        cursor.execute("INSERT INTO bookstore_author (name, email) "
                       "SELECT 'S' || i, 's' || i || '@mx.test' FROM generate_series(0, %s) i", [LARGE - 1])
        cursor.execute("INSERT INTO bookstore_book (title, author_id, pages, blurb) "
                       "SELECT 'T' || i, a.id, i, '' FROM bookstore_author a, generate_series(1, 2) i")
    # No registry heartbeat while measuring (it writes every subscription's row); one user-lane
    # connection (subscriptions start there; the write fence needs none); one connection may
    # hold all LARGE subscriptions.
    live = start_server("--node-heartbeat", "600", "--db-connections", "1", "--max-subscriptions", str(LARGE))
    stats = Statistics(live_database_url)
    try:
        with stats.stats.cursor() as cur:  # nothing else serves this database meanwhile
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                        "AND application_name = 'ddpctl-dispatcher'", [stats.dbname])
            assert cur.fetchone()[0] == 1, "another ddpctl serve uses the database: the counts would be off"
        with RecordingClient(live.ws_url) as client:
            client.connect()
            client.subscribe_all([Sub(BooksByAuthorEmail, (f"s{i}@mx.test",)) for i in range(SMALL)])
            small = measure(stats, client, SMALL)
            client.subscribe_all([Sub(BooksByAuthorEmail, (f"s{i}@mx.test",)) for i in range(SMALL, LARGE)])
            client.log.clear()
            large = measure(stats, client, LARGE, bound=small.median + SLACK)
    finally:
        stats.close()
    report = f"\n  {SMALL} subscriptions: {small}\n  {LARGE} subscriptions: {large}"
    print(report)
    assert small.median >= 2, f"the statistics did not see the changes:{report}"
    assert large.median <= small.median + SLACK, \
        f"SQL transactions per change grow with the number of subscriptions:{report}"


# -- 4. falling back to refreshing alone -----------------------------------------------------

def subs_modes(ddpctl, *clients: DDPClient) -> dict[tuple[str, str], str]:
    """(session, sub id) -> refresh mode of ``clients``' subscriptions (``ddpctl subs ls``)."""
    sessions = {client.session for client in clients}
    return {(r["connection"], r["sub_id"]): r["refresh"]
            for r in json.loads(ddpctl("subs", "ls", "--json").stdout) if r["connection"] in sessions}


def book_titles(client: DDPClient) -> set[str]:
    return {doc["title"] for doc in client.collections.get("bookstore.book", {}).values()}


class _Sink:
    """Stands for a subscription of an in-process observer: keeps what it is sent."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, dict | None]] = []

    def welcome(self, documents) -> None:
        pass

    def send(self, message) -> None:
        self.messages.append((message.op, message.id, message.fields))

    def send_all(self, messages) -> None:
        for message in messages:
            self.send(message)

    def error(self, error) -> None:
        self.messages.append(("error", str(error), None))


@pytest.mark.django_db(transaction=True)
def test_a_shape_whose_multiplexed_query_fails_refreshes_alone_and_loses_nothing(monkeypatch):
    """A multiplexed statement that fails where each observer's own query works (forced
    here: a real one is a planner or executor difference) falls back to refreshing
    observer by observer, loses nothing, and marks the shape broken."""
    from django.db import ProgrammingError

    from ddpctl.livedata.multiplex import BatchRefresh
    from ddpctl.livedata.observer import ChangeSet, Cursor, ObserverRegistry
    from ddpctl.livedata.shape import Shape

    authors = [Author.objects.create(name=f"A{i}", email=f"fallback{i}@example.com") for i in range(3)]
    registry, sinks = ObserverRegistry(), []
    for author in authors:
        observer, _ = registry.get_or_create(("fallback", author.email), lambda a=author: [
            Cursor(collections.for_model(Book), Book.objects.filter(author__email=a.email))])
        sinks.append(_Sink())
        observer.add(sinks[-1])
        observer.initialize()
    observers = registry.all()
    (shape,) = {o.cursors[0].shape for o in observers}
    calls = []
    real_query = Shape.query

    def failing(self, cohorts, keys):
        calls.append(len(cohorts))
        if len(cohorts) > 1:
            raise ProgrammingError("a multiplexed statement that fails")
        return real_query(self, cohorts, keys)

    monkeypatch.setattr(Shape, "query", failing)

    def refresh(book_id):
        changes = ChangeSet()
        changes.add("bookstore_book", str(book_id))
        BatchRefresh(changes, registry.affected(changes)).run(lambda jobs: [job() for job in jobs])

    book = Book.objects.create(title="new", author=authors[1])
    refresh(book.pk)
    assert calls == [3]  # one multiplexed statement, which failed; then each observer's own query
    assert sinks[1].messages == [("added", str(book.pk), {"title": "new", "author_id": str(authors[1].pk),
                                                          "pages": 0, "published": None, "blurb": "",
                                                          "genres_ids": []})]
    assert sinks[0].messages == sinks[2].messages == []
    assert shape.broken.startswith("its multiplexed query failed: ProgrammingError")
    assert {o.refresh_mode for o in observers} == {f"alone: {shape.broken}"}
    Book.objects.filter(pk=book.pk).update(title="renamed")
    refresh(book.pk)
    assert calls == [3]  # refreshed alone from now on
    assert sinks[1].messages[-1] == ("changed", str(book.pk), {"title": "renamed"})


def test_a_subscriber_whose_own_query_fails_ends_alone_and_the_shape_stays_multiplexed(
        start_server, orm, ddpctl):
    truncate()
    author = Author.objects.using(LIVE).create(name="D", email="divisor@example.com")
    book = Book.objects.using(LIVE).create(title="one", author=author, pages=10)
    server = start_server("--node-heartbeat", "0.3")
    with RecordingClient(server.ws_url) as fine, RecordingClient(server.ws_url) as doomed, \
            RecordingClient(server.ws_url) as other:
        for client in (fine, doomed, other):
            client.connect()
        kept = (fine.session, fine.subscribe("BooksByPagesDivisor", 5))
        ended = doomed.subscribe("BooksByPagesDivisor", 7)
        other.subscribe("BooksByPagesDivisor", 9)
        Book.objects.using(LIVE).filter(pk=book.pk).update(pages=7)  # 100 / (7 - 7) for `doomed` only
        wait_for(doomed, lambda c: any(m.get("msg") == "nosub" and m.get("id") == ended for m in c.log))
        (nosub,) = [m for m in doomed.log if m.get("msg") == "nosub"]
        assert nosub["error"]["error"] == 500
        for client in (fine, other):
            wait_for(client, lambda c: {d["pages"] for d in c.collections["bookstore.book"].values()} == {7})
        time.sleep(1)  # two heartbeats: the registry shows the mode after the failure
        assert eventually(lambda: subs_modes(ddpctl, fine).get(kept)) == "multiplexed"
        Book.objects.using(LIVE).create(title="two", author=author, pages=3)
        for client in (fine, other):
            wait_for(client, lambda c: book_titles(c) == {"one", "two"})


@pytest.mark.django_db(transaction=True)
def test_parameters_keep_the_type_of_their_literal_in_a_multiplexed_statement():
    """``pages * 0.5``: PostgreSQL infers ``integer`` for the parameter's place, but the
    cursor's own statement multiplies by the numeric literal 0.5; so must the shape's
    (not by 0.5 cast to integer, 1).  Integers keep their own shape."""
    from django.db.models import ExpressionWrapper, FloatField

    from ddpctl.livedata.observer import Cursor

    author = Author.objects.create(name="T", email="types@example.com")
    book = Book.objects.create(title="long", author=author, pages=150)

    def cursor(factor, threshold):
        score = ExpressionWrapper(F("pages") * factor, output_field=FloatField())
        books = Book.objects.alias(score=score).filter(score__gt=threshold)
        return Cursor(collections.for_model(Book), books)

    half, quarter, whole = cursor(0.5, 70), cursor(0.25, 70), cursor(1, 70)
    assert half.shape is quarter.shape and half.shape is not None
    assert whole.shape is not half.shape  # an int parameter: a shape of its own
    assert half.shape.query([half.params, quarter.params], None) == [(book.pk, 0)]  # 75 > 70, 37.5 is not
    assert whole.shape.query([whole.params, (1, 200)], None) == [(book.pk, 0)]
    big = cursor(2**40, 70)  # an integer too big for "integer": bigint, not an error
    assert big.shape is whole.shape
    assert sorted(whole.shape.query([whole.params, big.params], None)) == [(book.pk, 0), (book.pk, 1)]


@pytest.mark.django_db(transaction=True)
def test_only_a_shape_of_every_row_of_its_table_is_every_row():
    from ddpctl.livedata.observer import Cursor

    every = [Book.objects.all(), Book.objects.order_by("-title"), Book.objects.defer("blurb")]
    not_every = [Book.objects.filter(author__email="x@y"), Book.objects.filter(pages__gt=3),
                 Book.objects.all()[:5], Book.objects.distinct(), Book.objects.exclude(title=""),
                 Book.objects.extra(where=["pages > 0"]), Book.objects.filter(genres__name="g")]
    for queryset, expected in [(q, True) for q in every] + [(q, False) for q in not_every]:
        cursor = Cursor(collections.for_model(Book), queryset)
        assert cursor.shape is not None, cursor.alone
        assert cursor.shape.every_row is expected, queryset.query


@pytest.mark.django_db(transaction=True)
def test_a_shape_of_every_row_reads_the_changed_rows_without_a_key_statement(monkeypatch):
    """Batches of inserts, updates and deletes give an observer of every book (no key
    statement: its changed rows are read, those gone are removed) and a filtered one the
    same messages as each observer refreshing alone with its own queries."""
    from ddpctl.livedata.multiplex import BatchRefresh
    from ddpctl.livedata.observer import ChangeSet, Cursor, ObserverRegistry
    from ddpctl.livedata.shape import Shape

    authors = [Author.objects.create(name=f"E{i}", email=f"every{i}@example.com") for i in range(2)]
    books = [Book.objects.create(title=f"b{i}", author=authors[i % 2], pages=i) for i in range(6)]

    def queries():
        # (a filter of its own: shapes are shared process-wide, and another test breaks one)
        return [Book.objects.all(), Book.objects.filter(author__email=authors[0].email, pages__lt=100)]

    multiplexed, alone, sinks = ObserverRegistry(), ObserverRegistry(), {}
    for registry in (multiplexed, alone):
        for number in range(2):
            observer, _ = registry.get_or_create(number, lambda n=number: [
                Cursor(collections.for_model(Book), queries()[n])])
            sinks[registry, number] = _Sink()
            observer.add(sinks[registry, number])
            observer.initialize()
    assert [o.cursors[0].shape.every_row for o in multiplexed.all()] == [True, False]
    assert {o.refresh_mode for o in multiplexed.all()} == {"multiplexed"}
    statements = []
    real_query = Shape.query
    monkeypatch.setattr(Shape, "query", lambda self, cohorts, keys: statements.append(self.every_row)
                        or real_query(self, cohorts, keys))
    rng = random.Random(14)
    for _ in range(25):
        changes = ChangeSet()
        for _ in range(rng.randint(1, 4)):
            kind = rng.choice(["insert", "update", "update", "delete"])
            if kind == "insert" or not books:
                book = Book.objects.create(title="new", author=rng.choice(authors), pages=rng.randint(0, 9))
                books.append(book)
            elif kind == "update":
                book = rng.choice(books)
                Book.objects.filter(pk=book.pk).update(pages=rng.randint(0, 9), author=rng.choice(authors))
            else:
                book = books.pop(rng.randrange(len(books)))
                Book.objects.filter(pk=book.pk).delete()
            changes.add("bookstore_book", str(book.pk))
        BatchRefresh(changes, multiplexed.affected(changes)).run(lambda jobs: [job() for job in jobs])
        for observer in alone.affected(changes):
            observer.refresh(changes)
    assert statements and not any(statements)  # only the filtered shape asked for keys
    for number in range(2):
        assert sinks[multiplexed, number].messages == sinks[alone, number].messages
    assert {op for op, _, _ in sinks[multiplexed, 0].messages} == {"added", "changed", "removed"}
