import logging
import time
from fractions import Fraction

from bookstore.models import Author, Book, Genre
from django.db.models import F, Q

from ddpctl.api import (
    Collection,
    MeteorError,
    Publication,
    add_type,
    current_invocation,
    method,
    on_connection,
    publish,
)

from .models import (
    BoardMember,
    Card,
    DocLabel,
    Everything,
    Hostile,
    HostilePair,
    HostileTag,
    Membership,
    Note,
    TeamDoc,
    TenantNote,
    Tiny,
)


@method
def echo(*args):
    return list(args)


@method
def crash():
    raise ZeroDivisionError("deliberate failure in a test method")


@method
def meteor_error():
    raise MeteorError("not-allowed", "You may not", {"why": "test"})


@method
def not_ejson():
    return object()


@method
def error_details_not_ejson():
    raise MeteorError("bad", "details that cannot be sent", {"what": object()})


@method
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@method
def add_then_fail(title):
    """Writes, then raises: the write must be rolled back."""
    author, _ = Author.objects.get_or_create(email="rollback@example.com", defaults={"name": "R"})
    Book.objects.create(title=title, author=author)
    raise MeteorError(409, "rolled back")


@method
def insert_id(collection):
    """The id a Meteor client stub predicts for an insert into ``collection``."""
    return current_invocation().random_stream(f"/collection/{collection}").id()


@method
def whoami():
    conn = current_invocation().connection
    return {"session": conn.id, "address": conn.client_address}


@publish("numbers")
def numbers(sub, count=3):
    for i in range(count):
        sub.added("numbers", str(i), {"value": i})
    sub.ready()


# A custom EJSON type whose decoder raises whatever bad input provokes (ZeroDivisionError,
# IndexError, TypeError, ...); tests/ejson_strategies.py registers the same on the client side.
add_type("fraction", Fraction, lambda f: [f.numerator, f.denominator], lambda v: Fraction(v[0], v[1]))


@publish("echo_params")
def echo_params(sub, *params):
    """One document holding the subscription's params."""
    sub.added("params", sub.id or "-", {"params": list(params)})
    sub.ready()


@publish("failing")
def failing(sub):
    sub.added("numbers", "x", {"value": 1})
    raise RuntimeError("deliberate failure in a test publication")


@method
def pg_sleep(seconds):
    """Sleep inside PostgreSQL: holds a database connection the whole time."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [seconds])
    return seconds


# -- live data ------------------------------------------------------------------------

class Notes(Collection):
    model = Note

    def visible(self, queryset, user):
        if user is None:
            return queryset.filter(shared=True)
        return queryset.filter(Q(owner=user) | Q(shared=True))


class MyNotes(Publication):
    queries = [Note.objects.all()]


class BigBooks(Publication):
    """A filtered publication: rows enter and leave as ``pages`` changes."""

    def get_queries(self, min_pages):
        return [Book.objects.filter(pages__gte=min_pages)]


class PagesRatio(Publication):
    """Its query fails for a book with 0 pages (division by zero in SQL: a DataError)."""

    queries = [Book.objects.annotate(ratio=1000 / F("pages"))]


class SlowBooks(Publication):
    """Each query of its observer takes half a second in PostgreSQL (once, not per row; in its
    WHERE clause, which a multiplexed refresh runs too)."""

    queries = [Book.objects.extra(where=["(SELECT pg_sleep(0.5)::text) IS NOT NULL"])]


class BooksByAuthorName(Publication):
    """Books join authors on a column that is not unique: an author's rename moves books."""

    def get_queries(self, name):
        return [Book.objects.filter(author__name=name), Author.objects.filter(name=name)]


class Explode(Publication):
    def get_queries(self):
        raise RuntimeError("deliberate failure in get_queries")


@method
def login_as(username):
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username=username)
    current_invocation().set_user_id(user.pk)
    return user.pk


@method
def orm(operation, *args):
    """Each ORM write path, for the change-capture tests."""
    if operation == "update_pages":
        return Book.objects.filter(pk__in=args[0]).update(pages=args[1])
    if operation == "bulk_create":
        author, _ = Author.objects.get_or_create(email="bulk@example.com", defaults={"name": "Bulk"})
        books = Book.objects.bulk_create([Book(title=t, author=author) for t in args[0]])
        return [b.pk for b in books]
    if operation == "delete":
        return Book.objects.filter(pk__in=args[0]).delete()[0]
    if operation == "add_genre":
        genre, _ = Genre.objects.get_or_create(name=args[1])
        Book.objects.get(pk=args[0]).genres.add(genre)
        return genre.pk
    if operation == "remove_genre":
        Book.objects.get(pk=args[0]).genres.remove(Genre.objects.get(name=args[1]))
        return None
    if operation == "save_counting_queries":
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        book = Book.objects.get(pk=args[0])
        book.pages += 1
        with CaptureQueriesContext(connection) as queries:
            book.save()
        return len(queries)
    raise MeteorError(400, f"unknown operation {operation}")


@method
def note(text, shared=False):
    user_id = current_invocation().user_id
    if user_id is None:
        raise MeteorError(403, "log in first")
    return Note.objects.create(owner_id=user_id, text=text, shared=shared).pk


@method
def pid():
    import os

    return os.getpid()


# -- observer sharing: publications scoped by what varies per subscriber ----------------

class TenantNotes(Collection):
    model = TenantNote


def tenant_header(connection):
    return connection.http_headers.get("x-tenant", "")


class NotesByTenantHeader(Publication):
    """Scoped by a request header, sharing left to ddpctl: private observers."""

    def get_queries(self, prefix=""):
        tenant = tenant_header(self.subscription.connection)
        return [TenantNote.objects.filter(tenant=tenant, text__startswith=prefix)]


class NotesByTenantKey(Publication):
    """Scoped by a request header, shared per tenant by an explicit sharing key."""

    def sharing_key(self, prefix=""):
        return tenant_header(self.subscription.connection)

    def get_queries(self, prefix=""):
        tenant = tenant_header(self.subscription.connection)
        return [TenantNote.objects.filter(tenant=tenant, text__startswith=prefix)]


class NotesByClientAddress(Publication):
    def get_queries(self, prefix=""):
        tenant = self.subscription.connection.client_address
        return [TenantNote.objects.filter(tenant=tenant, text__startswith=prefix)]


class NotesBySubscriptionUser(Publication):
    def get_queries(self, prefix=""):
        return [TenantNote.objects.filter(tenant=str(self.subscription.user_id), text__startswith=prefix)]


CURRENT_TENANT = {"name": ""}  # module state that ddpctl cannot track


@method
def set_current_tenant(name):
    CURRENT_TENANT["name"] = name


class NotesByModuleState(Publication):
    """Reads module state: only its declaration keeps subscribers apart."""

    def sharing_key(self, prefix=""):
        return self.PRIVATE

    def get_queries(self, prefix=""):
        return [TenantNote.objects.filter(tenant=CURRENT_TENANT["name"], text__startswith=prefix)]


@method
def observers_of(publication):
    """The observers of ``publication`` in this process: scope and subscriber count."""
    from ddpctl.livedata.observer import observers

    return sorted([repr(o.key[2]), len(o.subscribers)] for o in observers.all() if o.key[0] == publication)


# -- every field type -----------------------------------------------------------------

class EverythingCollection(Collection):
    model = Everything


class AllEverything(Publication):
    queries = [Everything.objects.all()]


@method
def everything(pk):
    """A row's field values as Python values: the method-result side of the same mapping."""
    row = Everything.objects.get(pk=pk)
    fields = Everything._meta.concrete_fields
    return {f.attname: f.value_from_object(row) for f in fields if not f.primary_key}


@method
def python_value(kind):
    """Python values a method may return, by name."""
    import datetime
    import decimal
    import ipaddress
    import uuid

    from django.utils.translation import gettext_lazy

    from .models import Kind, Level

    values = {
        "decimal": decimal.Decimal("12345678901234567890.1234567890"),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "set": {3, 1, 2},
        "frozenset": frozenset({"b", "a"}),
        "tuple": (1, "a", None),
        "nested": {"a": [decimal.Decimal("1.10"), {uuid.UUID(int=1)}], 7: datetime.date(2020, 2, 29)},
        "ip": ipaddress.ip_address("2001:db8::1"),
        "network": ipaddress.ip_network("10.0.0.0/8"),
        "enum": [Kind.EBOOK, Level.HIGH],
        "lazy": gettext_lazy("hello"),
        "nan": float("nan"),
        "time": datetime.time(13, 14, 15, 16),
        "duration": datetime.timedelta(days=1, microseconds=5),
        "bytes": bytearray(b"\x00\xff"),
        "naive": datetime.datetime(2020, 1, 2, 3, 4, 5, 678000),
        "model": Everything(),
        "generator": (i for i in range(3)),
        "object": {"rows": [1, object()]},
    }
    return values[kind]


@publish("unsendable")
def unsendable(sub):
    """Publishes one document, then one with a value that has no DDP mapping."""
    sub.added("things", "good", {"value": 1})
    sub.added("things", "bad", {"value": object()})
    sub.ready()


# -- change capture on hostile schemas ------------------------------------------------

class Hostiles(Collection):
    model = Hostile


class HostileTags(Collection):
    model = HostileTag


class HostilePairs(Collection):
    model = HostilePair


class Tinies(Collection):
    model = Tiny


class HostileAll(Publication):
    queries = [Hostile.objects.all(), HostileTag.objects.all(), HostilePair.objects.all(), Tiny.objects.all()]


@method
def hostile(operation, *args):
    """Each ORM write path on the hostile models."""
    import uuid

    if operation == "save":  # create or update through Model.save()
        ident, values = args
        obj = Hostile.objects.filter(ident=ident).first() or Hostile(ident=ident)
        for name, value in values.items():
            setattr(obj, name, value)
        obj.save()
        return obj.ident
    if operation == "update":
        return Hostile.objects.filter(ident__in=args[0]).update(**args[1])
    if operation == "rename":  # an UPDATE that changes the primary key
        return Hostile.objects.filter(ident=args[0]).update(ident=args[1])
    if operation == "bulk_create":
        return [h.ident for h in Hostile.objects.bulk_create([Hostile(ident=i, o=n) for i, n in args[0]])]
    if operation == "delete":
        return Hostile.objects.filter(ident__in=args[0]).delete()[0]
    if operation == "tag":
        tag, _ = HostileTag.objects.get_or_create(label=args[1], defaults={"uuid": uuid.uuid4()})
        obj = Hostile.objects.get(ident=args[0])
        obj.tags.add(tag)
        obj.tag = tag
        obj.save()
        return str(tag.uuid)
    if operation == "untag":
        obj = Hostile.objects.get(ident=args[0])
        obj.tags.remove(HostileTag.objects.get(label=args[1]))
        return None
    if operation == "pair":
        o, n, value = args
        pair, _ = HostilePair.objects.update_or_create(o=o, n=n, defaults={"value": value})
        return Collection.doc_id(pair.pk)
    if operation == "unpair":
        return HostilePair.objects.filter(o=args[0], n=args[1]).delete()[0]
    if operation == "tiny":
        tiny = Tiny.objects.create(value=args[0])
        tiny.value += 1
        tiny.save()
        return tiny.pk
    raise MeteorError(400, f"unknown operation {operation}")


# -- visibility and params reading tables without a Collection --------------------------

class TeamDocs(Collection):
    model = TeamDoc

    def visible(self, queryset, user):
        if user is None:
            return queryset.none()
        return queryset.filter(team__in=Membership.objects.filter(user=user).values("team"))


class MyTeamDocs(Publication):
    queries = [TeamDoc.objects.all()]


class LabelledDocs(Publication):
    """Reads doc_label, which only this run-time queryset reads."""

    def get_queries(self, label):
        return [TeamDoc.objects.filter(id__in=DocLabel.objects.filter(label=label).values("doc"))]


@method
def wait_for_lock(key):
    """Hold a database connection until the test frees advisory lock ``key``."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [key])
    return key


@method
def wait_for_file(path, then_add_author=None):
    """Wait, without touching the database, until the test creates ``path``; then maybe write.
    ``path`` + ``.waiting`` tells the test that the method runs."""
    import os

    open(f"{path}.waiting", "w").close()
    while not os.path.exists(path):
        time.sleep(0.05)
    if then_add_author:
        Author.objects.create(name=then_add_author, email=f"{then_add_author}@example.com")
    return path


# -- multiplexed observers: publications of one SQL shape with many params ---------------
# (BooksByAuthorEmail, a filter through a join, is the bookstore's.)

class BooksInRange(Publication):
    """Several params, one of them a range: rows move in and out as titles and pages change."""

    def get_queries(self, prefix, low, high):
        return [Book.objects.filter(title__startswith=prefix, pages__gte=low, pages__lt=high)]


class TopBooksOfAuthor(Publication):
    """Sliced and ordered: the three longest books of an author (ties by id)."""

    def get_queries(self, email):
        return [Book.objects.filter(author__email=email).order_by("-pages", "id")[:3]]


class BooksInGenre(Publication):
    """Filters through a many-to-many table: adding a genre to a book moves it in."""

    def get_queries(self, name):
        return [Book.objects.filter(genres__name=name)]


class Cards(Collection):
    model = Card

    def visible(self, queryset, user):
        """Its owner and the members of its board see a card; nobody logged out does."""
        if user is None:
            return queryset.none()
        boards = BoardMember.objects.filter(user=user).values("board")
        return queryset.filter(Q(owner=user) | Q(board__in=boards))


class VisibleCards(Publication):
    """Per user (Cards.visible) and per param: one SQL shape, a user id among its params."""

    def get_queries(self, min_points):
        return [Card.objects.filter(points__gte=min_points)]


class BooksByPagesDivisor(Publication):
    """Divides by ``pages - n``: a row with ``pages == n`` makes the query fail for that
    subscriber only (its observer ends with a 500; the others go on)."""

    def get_queries(self, n):
        return [Book.objects.extra(where=["100 / (pages - %s) <> 0"], params=[n])]


# -- connection hooks: active only for clients sending an X-Test-Hooks header ------------

hook_log = logging.getLogger("testapp.hooks")


@on_connection
def remember_connection(connection):
    mode = connection.http_headers.get("x-test-hooks")
    if not mode:
        return
    if mode == "crash":
        raise RuntimeError("deliberate failure in an on_connection hook")
    connection.data["tenant"] = connection.http_headers.get("x-test-tenant", "")
    connection.data["authors"] = Author.objects.count()  # hooks may use the ORM
    if mode == "crash-on-close":
        connection.on_close(lambda: 1 / 0)

    def closed():
        hook_log.warning("hook: connection %s closed (%d authors)", connection.id, Author.objects.count())

    connection.on_close(closed)


@on_connection
def second_hook(connection):
    """Runs after ``remember_connection``, even when that one raised."""
    if connection.http_headers.get("x-test-hooks"):
        connection.data["second"] = True


@method
def connection_data():
    return dict(current_invocation().connection.data)


@method
def close_my_connection():
    current_invocation().connection.close()


@method
def my_user_id():
    user_id = current_invocation().user_id
    return None if user_id is None else str(user_id)


@publish("connection_data")
def connection_data_publication(sub):
    sub.added("connection_data", sub.connection.id, dict(sub.connection.data))
    sub.ready()


class NotesOfConnectionTenant(Publication):
    """Scoped by what an ``on_connection`` hook stored in the connection's data."""

    def get_queries(self):
        return [TenantNote.objects.filter(tenant=self.subscription.connection.data.get("tenant", "?"))]


# -- accounts: what Django's auth signals reported in this server process ----------------

_auth_signals: list[list] = []


def _record_signal(name):
    def receiver(sender, **kwargs):
        user = kwargs.get("user")
        _auth_signals.append([name, None if user is None else user.get_username(),
                              kwargs.get("credentials")])
    receiver.__name__ = f"record_{name}"
    return receiver


def _connect_auth_signals():
    from django.contrib.auth import signals

    for name in ("user_logged_in", "user_logged_out", "user_login_failed"):
        getattr(signals, name).connect(_record_signal(name), weak=False, dispatch_uid=f"testapp-{name}")


_connect_auth_signals()


@method
def auth_signals():
    """The auth signals fired in this process so far: ``[[name, username, credentials]]``."""
    return list(_auth_signals)


# -- secrets in params (issue 15): kept out of the registry, `subs ls` and logs --------------

class BooksWithCode(Publication):
    """Its second param is secret (declared by position); dict keys that look secret always
    are.  Its query fails for a book with 0 pages (division by zero), to log its observer."""

    sensitive_params = [1]

    def get_queries(self, min_pages, code, options=None):
        return [Book.objects.annotate(ratio=1000 / F("pages")).filter(pages__gte=min_pages)]


@publish("secret_echo", sensitive_params=True)
def secret_echo(sub, *params):
    sub.added("params", sub.id or "-", {"count": len(params)})
    sub.ready()


@method
def sign_in(username, password):
    """A method whose second parameter's name looks secret."""
    return username
