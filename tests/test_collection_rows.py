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


# -- reads by primary key: statements compiled once, run again with new keys ---------------

def fresh(model):
    """A new instance of ``model``'s registered Collection class: nothing compiled yet."""
    return type(collections.for_model(model))()


def expected_read(collection, keys):
    """What ``read(keys)`` must give: ``serialize`` of each instance (many-to-many
    prefetched), None for a key with no row, in ``keys``' order."""
    model = collection.model
    found = by_instances(collection, model._base_manager.filter(pk__in=list(keys.values())))
    return {doc_id: found.get(doc_id) for doc_id in keys}


def assert_reads(collection, keys):
    read = collection.read(keys)
    expected = expected_read(collection, keys)
    assert list(read) == list(keys)
    assert [doc_id for doc_id, doc in read.items() if doc is None] == \
        [doc_id for doc_id, doc in expected.items() if doc is None]
    assert comparable(collection, {i: doc for i, doc in read.items() if doc is not None}) == \
        comparable(collection, {i: doc for i, doc in expected.items() if doc is not None})
    return read


class CompileCount:
    """How many statements Django compiled (``SQLCompiler.as_sql`` calls)."""

    def __init__(self, monkeypatch):
        from django.db.models.sql.compiler import SQLCompiler

        self.calls = 0
        original = SQLCompiler.as_sql

        def as_sql(compiler, *args, **kwargs):
            self.calls += 1
            return original(compiler, *args, **kwargs)

        monkeypatch.setattr(SQLCompiler, "as_sql", as_sql)

    def during(self, action):
        before = self.calls
        action()
        return self.calls - before


def make_rows():
    """Rows of every kind of key and many-to-many: bookstore books (integer keys, genres
    without an order), hostile rows (text keys with quotes, UUID-keyed tags through a quoted
    join table), tiny ones (smallint keys), cards (labels), every field type."""
    author = Author.objects.create(name="A", email="a@example.com")
    genres = [Genre.objects.create(name=f"g{i}") for i in range(4)]
    for i in range(6):
        book = Book.objects.create(title=f"b{i}'", author=author, pages=i, blurb="x" * i)
        for genre in reversed(genres[:i % 5]):
            book.genres.add(genre)
    tags = [HostileTag.objects.create(uuid=uuid.UUID(int=i * 7919 + 1), label=f"t'{i}\"") for i in range(4)]
    for i, ident in enumerate(["a'b", 'q"uote', "ü ü", "select", "{NULL}", "a,b\\"]):
        row = Hostile.objects.create(ident=ident, id=i, table=f"t{i}", tag=tags[i % 2])
        for tag in tags[:i % 5][::-1]:
            row.tags.add(tag)
    for value in range(4):
        Tiny.objects.create(value=value)
    owner = get_user_model().objects.create(username="owner")
    board = Board.objects.create(name="b")
    labels = [Label.objects.create(name=name) for name in ("m", "z", "a", "k")]
    for i in range(5):
        card = Card.objects.create(board=board, owner=owner, title=f"c{i}", points=i)
        for label in labels[i % 3:][::-1]:
            card.labels.add(label)
    insert_everything({column: sql for column, (sql, _) in EDGE.items() if column != "tags"})
    insert_everything({column: sql for column, (sql, _) in UPDATES.items() if column != "tags"})
    insert_everything({"big": None})
    return {model: [str(pk) for pk in model.objects.values_list("pk", flat=True)]
            for model in (Book, Hostile, HostileTag, Tiny, Card, Everything)}


MISSING = {Book: ["999999", "0"], Hostile: ["gone", "'"], HostileTag: [str(uuid.UUID(int=5))],
           Tiny: ["32000"], Card: ["-1"], Everything: ["999999"]}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), ordering=ORDERINGS)
def test_reads_by_key_give_serialize_s_documents_call_after_call(data, ordering):
    """For every kind of key and field, ``read`` called again and again on one collection
    (the first call compiles, the others reuse the statements) with keys that change
    between calls, rows that exist or not, gives what ``serialize`` gives: ids, fields,
    values and their types, many-to-many ids in the related model's order (Label's changed
    between examples, so compiled statements must follow it)."""
    with transaction.atomic():
        ids = make_rows()
        saved = Label._meta.ordering
        Label._meta.ordering = ordering
        try:
            for model in ids:
                for collection in (fresh(model), collections.for_model(model)):
                    assert collection._compiled_reader is not None
                    for _ in range(3):
                        doc_ids = data.draw(st.lists(st.sampled_from(ids[model] + MISSING[model]),
                                                     unique=True, max_size=8))
                        keys = {doc_id: collection.pk_from_id(doc_id) for doc_id in doc_ids}
                        assert_reads(collection, keys)
        finally:
            Label._meta.ordering = saved
        transaction.set_rollback(True)


def test_unordered_many_to_many_ids_stay_in_the_order_they_were_added_on_every_read():
    make_rows()
    collection = fresh(Book)
    books = list(Book.objects.order_by("pk"))
    keys = {str(book.pk): book.pk for book in books}
    expected = {str(book.pk): [str(pk) for pk in book.genres.through.objects.filter(book=book)
                               .order_by("pk").values_list("genre_id", flat=True)] for book in books}
    for subset in (keys, dict(list(keys.items())[2:]), keys):
        read = collection.read(subset)
        assert {doc_id: doc["genres_ids"] for doc_id, doc in read.items()} == \
            {doc_id: expected[doc_id] for doc_id in subset}


def test_a_second_read_runs_the_compiled_statements_only(monkeypatch):
    make_rows()
    compiled = CompileCount(monkeypatch)
    statements = []

    def record(execute, sql, params, many, context):
        statements.append((sql, params))
        return execute(sql, params, many, context)

    for model, per_read in ((Book, 2), (Hostile, 2), (HostileTag, 1), (Tiny, 1), (Card, 2), (Everything, 1)):
        collection = fresh(model)
        pks = list(model.objects.order_by("pk").values_list("pk", flat=True))
        first = {collection.doc_id(pk): pk for pk in pks[:2]}
        assert compiled.during(lambda: collection.read(first)) == per_read  # noqa: B023
        statements.clear()
        later = {collection.doc_id(pk): pk for pk in pks[1:]} | dict.fromkeys(MISSING[model])
        later = {doc_id: collection.pk_from_id(doc_id) for doc_id in later}
        with connection.execute_wrapper(record):
            assert compiled.during(lambda: collection.read(later)) == 0  # noqa: B023
            assert compiled.during(lambda: collection.read({})) == 0  # noqa: B023
        # through Django's cursor (execute_wrappers see it), one statement per table read
        assert len(statements) == per_read and all("unnest" in sql for sql, _ in statements)
        assert_reads(collection, later)
        assert_reads(collection, first)


def test_keys_that_are_no_array_are_compiled_each_time(monkeypatch):
    """Keys that do not go as one array parameter (``keys_in`` gives them back as they
    are: Django's own ``IN`` list) are compiled each time."""
    from ddpctl.livedata import collection as module

    make_rows()
    monkeypatch.setattr(module, "keys_in", lambda keys, prepared, field, connection: keys)
    compiled = CompileCount(monkeypatch)
    for model, per_read in ((Book, 2), (Hostile, 2), (HostileTag, 1)):
        collection = fresh(model)
        keys = {doc_id: collection.pk_from_id(doc_id)
                for doc_id in [str(pk) for pk in model.objects.values_list("pk", flat=True)] + MISSING[model]}
        for _ in range(2):
            assert compiled.during(lambda: collection.read(keys)) == per_read  # noqa: B023
        assert_reads(collection, keys)


def test_a_base_manager_of_its_own_is_compiled_and_obeyed_each_time(monkeypatch):
    from django.db import models

    make_rows()

    class Thick(models.Manager):
        def get_queryset(self):
            return super().get_queryset().filter(pages__gte=2)

    manager = Thick()
    manager.model, manager.name, manager.auto_created = Book, "_base_manager", True
    monkeypatch.setitem(Book._meta.__dict__, "base_manager", manager)
    collection = fresh(Book)
    assert collection.row_reader is not None and collection._compiled_reader is None
    compiled = CompileCount(monkeypatch)
    pages = dict(Book.objects.values_list("pk", "pages"))
    keys = {str(pk): pk for pk in pages}
    assert compiled.during(lambda: collection.read(keys)) == 2
    for _ in range(2):
        assert compiled.during(lambda: collection.read(keys)) == 1  # the main one; genres' is plain
        read = collection.read(keys)
        assert {doc_id for doc_id, doc in read.items() if doc is not None} == \
            {str(pk) for pk, n in pages.items() if n >= 2}


def test_a_default_manager_with_a_queryset_of_its_own_is_compiled_and_obeyed_each_time(monkeypatch):
    """The many-to-many statement goes through the related model's default manager (as
    ``prefetch_related``): one that filters is asked each time, the main statement is not
    compiled again."""
    from django.db import models

    make_rows()

    class NotG1(models.Manager):
        def get_queryset(self):
            return super().get_queryset().exclude(name="g1")

    manager = NotG1()
    manager.model, manager.name = Genre, "objects"
    monkeypatch.setitem(Genre._meta.__dict__, "default_manager", manager)
    collection = fresh(Book)
    g1 = str(Genre._base_manager.get(name="g1").pk)
    books = list(Book.objects.order_by("pk"))
    keys = {str(book.pk): book.pk for book in books}
    compiled = CompileCount(monkeypatch)
    assert compiled.during(lambda: collection.read(keys)) == 2
    for _ in range(2):
        assert compiled.during(lambda: collection.read(keys)) == 1  # the many-to-many one
        read = collection.read(keys)
        for book in books:
            added = [str(pk) for pk in book.genres.through.objects.filter(book=book)
                     .order_by("pk").values_list("genre_id", flat=True)]
            assert read[str(book.pk)]["genres_ids"] == [pk for pk in added if pk != g1]


def test_reads_after_a_post_init_receiver_appears_take_the_instance_path():
    make_rows()
    collection = fresh(Book)
    keys = {str(pk): pk for pk in Book.objects.values_list("pk", flat=True)}
    assert_reads(collection, keys)  # compiled

    def rename(sender, instance, **kwargs):
        instance.title = "renamed"

    post_init.connect(rename, sender=Book)
    try:
        read = assert_reads(collection, keys)
    finally:
        post_init.disconnect(rename, sender=Book)
    assert {doc["title"] for doc in read.values()} == {"renamed"}
    assert {doc["title"] for doc in collection.read(keys).values()} != {"renamed"}
