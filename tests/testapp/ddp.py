import time

from bookstore.models import Author, Book

from ddpctl.api import MeteorError, current_invocation, method, publish


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
