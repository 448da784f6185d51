import time

from bookstore.models import Author, Book, Genre
from django.db.models import Q

from ddpctl.api import Collection, MeteorError, Publication, current_invocation, method, publish

from .models import Note


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
def logout():
    current_invocation().set_user_id(None)


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
