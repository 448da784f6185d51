"""Live fan-out through the mergebox's sole-owner path and the connection's parked writers:
clients holding documents from one subscription, or from two overlapping ones, end with
exactly what a new subscriber gets, after any sequence of writes, with pauses that let
their writers go idle and end in between; unsubscribing one of two overlapping
subscriptions leaves exactly the other's documents."""
import random
import time

import pytest
from conftest import wait_for

from ddpctl.testing import DDPClient

EMAIL = "ada@example.com"


def _truth(url, subscriptions):
    """What a new client holding ``subscriptions`` gets: the state every other must reach."""
    with DDPClient(url) as fresh:
        fresh.connect()
        for name, *params in subscriptions:
            fresh.subscribe(name, *params)
        return {name: docs for name, docs in fresh.collections.items() if docs}


def _view(client):
    return {name: docs for name, docs in client.collections.items() if docs}


def _write(sql, rng, authors):
    """One random write: a book added, retitled, moved to another author or deleted, or an
    author renamed (a joined table for BooksByAuthorEmail)."""
    books = [row[0] for row in sql("SELECT id FROM bookstore_book ORDER BY id", fetch=True)]
    kind = rng.choice(["add", "retitle", "retitle", "move", "delete", "author"]) if books else "add"
    if kind == "add":
        sql("INSERT INTO bookstore_book (title, author_id, pages, blurb) VALUES (%s, %s, %s, '')",
            [f"t{rng.randrange(1000)}", rng.choice(authors), rng.randrange(5)])
    elif kind == "retitle":
        sql("UPDATE bookstore_book SET title = %s, pages = %s WHERE id = %s",
            [f"t{rng.randrange(1000)}", rng.randrange(5), rng.choice(books)])
    elif kind == "move":
        sql("UPDATE bookstore_book SET author_id = %s WHERE id = %s",
            [rng.choice(authors), rng.choice(books)])
    elif kind == "delete":
        sql("DELETE FROM bookstore_book WHERE id = %s", [rng.choice(books)])
    else:
        sql("UPDATE bookstore_author SET name = %s WHERE id = %s",
            [f"n{rng.randrange(1000)}", rng.choice(authors)])


@pytest.mark.parametrize("seed", [1, 2])
def test_single_and_overlapping_subscriptions_converge_to_a_new_subscribers_view(server, sql, seed):
    # No TRUNCATE between runs (``clean``): it can deadlock with the server still reading the
    # last run's changes.  The truth is a new subscriber's view, whatever else is there.
    rng = random.Random(seed)
    authors = [sql("INSERT INTO bookstore_author (name, email) VALUES (%s, %s) "
                   "ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name RETURNING id",
                   [name, email], fetch=True)[0][0]
               for name, email in (("Ada", EMAIL), ("Bob", "bob@example.com"))]
    for _ in range(6):
        _write(sql, rng, authors)
    both = [("AllBooks",), ("BooksByAuthorEmail", EMAIL)]
    with DDPClient(server.ws_url) as sole, DDPClient(server.sockjs_url) as overlap:
        sole.connect()
        sole.subscribe("AllBooks")
        overlap.connect()
        subs = [overlap.subscribe(name, *params) for name, *params in both]
        for step in range(12):
            for _ in range(rng.randrange(1, 4)):
                _write(sql, rng, authors)
            if step % 4 == 3:
                # Longer than a writer lingers idle (1 s): the next write wakes new ones.
                time.sleep(1.5)
            truth = _truth(server.ws_url, [("AllBooks",)])
            wait_for(sole, lambda c, truth=truth: _view(c) == truth)
            wait_for(overlap, lambda c, truth=truth: _view(c) == truth)  # AllBooks covers the other
        # Unsubscribing AllBooks leaves exactly the other subscription's documents.
        overlap.send({"msg": "unsub", "id": subs[0]})
        truth = _truth(server.ws_url, both[1:])
        wait_for(overlap, lambda c: _view(c) == truth)
        for _ in range(4):
            _write(sql, rng, authors)
        truth = _truth(server.ws_url, both[1:])
        wait_for(overlap, lambda c: _view(c) == truth)
        overlap.send({"msg": "unsub", "id": subs[1]})
        wait_for(overlap, lambda c: _view(c) == {})
