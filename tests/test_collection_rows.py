"""``Collection.documents``: rows read as tuples give exactly ``serialize()``'s documents.

The fast path (``values_list`` and one statement per many-to-many field for all rows) must
yield, for any rows and any queryset, the very documents that ``serialize()`` of each model
instance yields (``prefetch_related`` for the many-to-many ids): the same ids in the same
order, the same fields in the same order, values of the same types -- for every field type
(``tests/test_every_field.py``'s edge values), odd keys (UUID, text with quotes, smallint),
many-to-many ids in the related model's order, and querysets filtered, ordered, sliced or
distinct.  Where only instances can tell (``serialize`` overridden, a composite primary key,
a ``post_init`` receiver), ``documents`` takes the instance path.
"""
import datetime
import uuid

import pytest
from bookstore.models import Author, Book, Genre
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models.signals import post_init
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_every_field import EDGE, UPDATES
from testapp.models import Board, Card, Everything, Hostile, HostilePair, HostileTag, Label, Tiny

from ddpctl.livedata.collection import Collection, collections

pytestmark = pytest.mark.django_db


def exact(value):
    """``value`` with its types spelled out (1, 1.0 and True differ; NaN equals NaN; dicts
    keep their key order)."""
    if isinstance(value, dict):
        return ("dict", type(value).__name__, [(k, exact(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [exact(v) for v in value])
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, datetime.datetime):
        return ("datetime", value.isoformat(), value.utcoffset())
    return (type(value).__name__, value)


def by_instances(collection, queryset):
    return dict(collection.serialize(obj) for obj in collection.prepare(queryset))


def comparable(collection, docs):
    """``exact(docs)``, the ids of a many-to-many field whose model has no order sorted
    (``prefetch_related`` gives them in whatever order the plan does)."""
    unordered = [f"{f.name}_ids" for f in collection.many if not f.remote_field.model._meta.ordering]
    return exact({doc_id: {name: sorted(value) if name in unordered else value
                           for name, value in fields.items()}
                  for doc_id, fields in docs.items()})


def assert_same_documents(collection, queryset):
    expected = by_instances(collection, queryset)
    found = collection.documents(collection.prepare(queryset))
    assert comparable(collection, found) == comparable(collection, expected)
    return found


def insert_everything(values):
    columns = ", ".join(f'"{c}"' for c in values)
    placeholders = ", ".join(["%s"] * len(values))
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO testapp_everything ({columns}) VALUES ({placeholders})",
                       list(values.values()))


def test_every_field_type_and_edge_value():
    with connection.cursor() as cursor:
        cursor.execute("SELECT udt_name FROM information_schema.columns "
                       "WHERE table_name = 'testapp_everything' AND column_name = 'tags'")
        has_hstore = cursor.fetchone()[0] == "hstore"
    edge = {column: sql for column, (sql, _) in EDGE.items() if has_hstore or column != "tags"}
    updates = {column: sql for column, (sql, _) in UPDATES.items() if has_hstore or column != "tags"}
    insert_everything(edge)
    insert_everything(updates)
    insert_everything({"big": None})  # every column NULL
    collection = collections.for_model(Everything)
    assert collection.row_reader is not None
    docs = assert_same_documents(collection, Everything.objects.all())
    assert len(docs) == 3
    assert_same_documents(collection, Everything.objects.order_by("-id"))
    assert_same_documents(collection, Everything.objects.filter(big__isnull=False).only("char"))


def test_odd_primary_keys_and_many_to_many_through_a_quoted_table():
    tags = [HostileTag.objects.create(uuid=uuid.UUID(int=i * 7919), label=f"t'{i}\"") for i in range(4)]
    for i, ident in enumerate(["a'b", 'q"uote', "ü ü", "select"]):
        row = Hostile.objects.create(ident=ident, id=i, table=f"t{i}", tag=tags[i % 2])
        row.tags.set(tags[:i])
    for value in range(3):
        Tiny.objects.create(value=value)
    for model in (Hostile, HostileTag, Tiny):
        collection = collections.for_model(model)
        assert collection.row_reader is not None
        docs = assert_same_documents(collection, model.objects.all())
        assert_same_documents(collection, model.objects.order_by("-pk")[1:3])
        # by primary key (multiplexed refreshes): the keys as one array of the key's type
        keys = {doc_id: collection.pk_from_id(doc_id) for doc_id in docs}
        read = collection.read(keys)
        assert comparable(collection, read) == comparable(collection, {i: docs[i] for i in keys})


def test_a_composite_primary_key_is_read_as_instances():
    HostilePair.objects.create(o=1, n="x", value=2)
    collection = collections.for_model(HostilePair)
    assert collection.row_reader is None
    assert_same_documents(collection, HostilePair.objects.all())


def test_serialize_overridden_or_a_post_init_receiver_takes_the_instance_path():
    author = Author.objects.create(name="A", email="a@example.com")
    Book.objects.create(title="one", author=author, pages=3)

    class Shouting(Collection, register=False):
        model = Book

        def serialize(self, obj):
            doc_id, fields = super().serialize(obj)
            return doc_id, {**fields, "title": fields["title"].upper()}

    shouting = Shouting()
    assert shouting.row_reader is None
    assert [d["title"] for d in assert_same_documents(shouting, Book.objects.all()).values()] == ["ONE"]

    def rename(sender, instance, **kwargs):
        instance.title = "renamed"

    books = collections.for_model(Book)
    post_init.connect(rename, sender=Book)
    try:
        docs = assert_same_documents(books, Book.objects.all())
    finally:
        post_init.disconnect(rename, sender=Book)
    assert [d["title"] for d in docs.values()] == ["renamed"]


ORDERINGS = st.sampled_from([[], ["name"], ["-name"], ["-id"]])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.text("abcXYZ é'", min_size=1, max_size=6), min_size=0, max_size=6, unique=True),
       cards=st.lists(st.tuples(st.integers(-3, 3), st.lists(st.integers(0, 5), max_size=6)), max_size=8),
       ordering=ORDERINGS, threshold=st.integers(-4, 4), limit=st.integers(0, 9))
def test_many_to_many_ids_in_the_related_models_order(names, cards, ordering, threshold, limit):
    """Cards with random labels, the label model ordered every way: the ids of each card's
    labels come in the same order as ``prefetch_related`` gives them, for every queryset."""
    with transaction.atomic():
        owner = get_user_model().objects.create(username="owner")
        board = Board.objects.create(name="b")
        labels = [Label.objects.create(name=name) for name in names]
        for points, picks in cards:
            card = Card.objects.create(board=board, owner=owner, title=f"c{points}", points=points)
            if labels:
                card.labels.set({labels[i % len(labels)] for i in picks})
        collection = collections.for_model(Card)
        saved = Label._meta.ordering
        Label._meta.ordering = ordering
        try:
            for queryset in (Card.objects.all(),
                             Card.objects.filter(points__gt=threshold).order_by("-points"),
                             Card.objects.order_by("title", "pk")[:limit],
                             Card.objects.filter(labels__name__in=names[:2]).distinct()):
                assert_same_documents(collection, queryset)
        finally:
            Label._meta.ordering = saved
        transaction.set_rollback(True)


def test_read_by_keys_and_the_books_of_the_benchmark():
    author = Author.objects.create(name="A", email="a@example.com")
    genres = [Genre.objects.create(name=f"g{i}") for i in range(3)]
    books = [Book.objects.create(title=f"b{i}", author=author, pages=i) for i in range(5)]
    for i, book in enumerate(books):
        for genre in reversed(genres[:i % 4]):  # one at a time: add() of several takes a set
            book.genres.add(genre)
    collection = collections.for_model(Book)
    expected = by_instances(collection, Book.objects.all())
    keys = {collection.doc_id(book.pk): book.pk for book in books} | {"999999": 999999}
    read = collection.read(keys)
    assert read.pop("999999") is None
    expected = {doc_id: expected[doc_id] for doc_id in read}
    assert comparable(collection, read) == comparable(collection, expected)
    # Genre has no ordering: the ids come in the order they were added, every time
    assert [collection.read(keys)[doc_id]["genres_ids"] for doc_id in read] == [
        [str(g.pk) for g in reversed(genres[:i % 4])] for i in range(5)]


# Text PostgreSQL's array input treats specially: quotes, backslashes, braces, commas,
# blanks, NULL, and any character at all (but NUL, which text cannot hold).
ARRAY_TEXT = st.one_of(st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]),
                               max_size=8),
                       st.sampled_from(["NULL", "null", "", " ", '"', "\\", "{}", "a,b", "{", "}", " x "]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.lists(ARRAY_TEXT, max_size=6), st.lists(st.integers(-(2 ** 63), 2 ** 63 - 1), max_size=6),
                 st.lists(st.uuids(), max_size=4)))
def test_an_array_literal_reads_back_as_the_same_keys(keys):
    """``keys_in``'s one parameter: PostgreSQL reads the literal back as exactly ``keys``."""
    from ddpctl.livedata.collection import array_literal

    column_type = ("bigint" if keys and type(keys[0]) is int else
                   "uuid" if keys and isinstance(keys[0], uuid.UUID) else "text")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT %s::{column_type}[]", [array_literal(keys)])
        assert cursor.fetchone()[0] == keys


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.integers(-(2 ** 31), 2 ** 31 - 1), st.booleans(), st.text("0123-", max_size=3)),
                max_size=5))
def test_prepared_keys_are_get_db_prep_value_s(keys):
    """Django's integer fields' ``get_db_prep_value`` skipped only where it gives each key back."""
    from django.db import models

    from ddpctl.livedata.collection import prepared_keys

    class Odd(models.IntegerField):
        def get_prep_value(self, value):
            return super().get_prep_value(value) * 2

    for field in (Book._meta.pk, Book._meta.get_field("pages"), models.BigIntegerField(),
                  models.SmallAutoField(primary_key=True), Odd(), models.CharField(), models.UUIDField()):
        try:
            expected = [field.get_db_prep_value(key, connection) for key in keys]
        except Exception as exc:  # a key the field refuses: refused the same way
            with pytest.raises(type(exc)):
                prepared_keys(field, keys, connection)
            continue
        got = prepared_keys(field, keys, connection)
        assert [(type(v), v) for v in got] == [(type(v), v) for v in expected]


def test_a_collection_s_own_document_ids_and_file_fields_on_the_fast_path():
    """The compiled row reader calls an overridden ``doc_id``, and a file field's empty name
    is None, as ``serialize`` has them."""
    author = Author.objects.create(name="A", email="a@example.com")
    Book.objects.create(title="one", author=author, pages=3)

    class Prefixed(Collection, register=False):
        model = Book

        @staticmethod
        def doc_id(pk):
            return f"book-{pk}"

    prefixed = Prefixed()
    assert prefixed.row_reader is not None
    docs = assert_same_documents(prefixed, Book.objects.all())
    assert list(docs) == [f"book-{pk}" for pk in Book.objects.values_list("pk", flat=True)]
    insert_everything({"big": 1, "file": ""})
    insert_everything({"big": 2, "file": "a/b.txt"})
    everything = collections.for_model(Everything)
    docs = assert_same_documents(everything, Everything.objects.order_by("big"))
    files = [d["file"] for d in docs.values()]
    assert files == [None, "a/b.txt"]
