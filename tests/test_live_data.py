"""Live data against a real PostgreSQL: change capture, the dispatcher, observers.

Writes come from the server's ORM (methods), from another psycopg2 connection and from
the psql binary; clients are real DDP connections to ``ddpctl serve`` processes.
"""
import subprocess
import threading
import time
from pathlib import Path

import psycopg2
import pytest
from conftest import wait_for

from ddpctl.commands.dbshell import psql_executable
from ddpctl.testing import DDPClient

BOOK = "bookstore.book"


@pytest.fixture
def live(start_server, clean):
    return start_server()


def author(sql, email="a@example.com"):
    return sql("INSERT INTO bookstore_author (name, email) VALUES ('A', %s) "
               "ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name RETURNING id",
               [email], fetch=True)[0][0]


def insert_book(sql, title, pages=0, email="a@example.com"):
    author_id = author(sql, email)
    return sql("INSERT INTO bookstore_book (title, author_id, pages, blurb) "
               "VALUES (%s, %s, %s, '') RETURNING id", [title, author_id, pages], fetch=True)[0][0]



def books(client):
    return client.collections.get(BOOK, {})


def test_every_capture_path_reaches_a_subscriber(live, sql):
    with DDPClient(live.ws_url) as client:
        client.connect()
        client.subscribe("AllBooks")
        # save() through a method: the data arrives before the method's result (write fence)
        first = client.call("books.add", "Dune", "frank@herbert.com", 412)
        assert books(client)[str(first)]["title"] == "Dune"
        client.call("books.rename", first, "Dune Messiah")
        assert books(client)[str(first)]["title"] == "Dune Messiah"
        # QuerySet.update()
        client.call("orm", "update_pages", [first], 500)
        assert books(client)[str(first)]["pages"] == 500
        # bulk_create()
        created = client.call("orm", "bulk_create", ["B1", "B2", "B3"])
        assert {books(client)[str(pk)]["title"] for pk in created} == {"B1", "B2", "B3"}
        # many-to-many add and remove
        client.call("orm", "add_genre", first, "scifi")
        assert len(books(client)[str(first)]["genres_ids"]) == 1
        client.call("orm", "remove_genre", first, "scifi")
        assert books(client)[str(first)]["genres_ids"] == []
        # delete()
        client.call("orm", "delete", created[:2])
        assert str(created[0]) not in books(client) and str(created[2]) in books(client)
        # raw SQL from another connection: insert, update, delete
        raw = insert_book(sql, "Raw Insert", 10)
        wait_for(client, lambda c: str(raw) in books(c))
        sql("UPDATE bookstore_book SET pages = 11 WHERE id = %s", [raw])
        wait_for(client, lambda c: books(c)[str(raw)]["pages"] == 11)
        sql("DELETE FROM bookstore_book WHERE id = %s", [raw])
        wait_for(client, lambda c: str(raw) not in books(c))


def test_changed_sends_only_changed_fields(live, sql):
    book = insert_book(sql, "Fields", 1)
    with DDPClient(live.ws_url) as client:
        client.connect()
        client.subscribe("AllBooks")
        sql("UPDATE bookstore_book SET pages = 2 WHERE id = %s", [book])
        messages = wait_for(client, lambda c: books(c)[str(book)]["pages"] == 2)
        assert messages[-1] == {"msg": "changed", "collection": BOOK, "id": str(book), "fields": {"pages": 2}}


def test_psql_binary_writes_reach_clients(live, live_database_url):
    psql = psql_executable()
    with DDPClient(live.ws_url) as client:
        client.connect()
        client.subscribe("AllBooks")
        subprocess.run([psql, live_database_url, "-v", "ON_ERROR_STOP=1", "-c",
                        "INSERT INTO bookstore_author (name, email) VALUES ('P', 'p@sql') RETURNING id; "
                        "INSERT INTO bookstore_book (title, author_id, pages, blurb) "
                        "SELECT 'From psql', id, 1, '' FROM bookstore_author WHERE email = 'p@sql'"],
                       check=True, capture_output=True)
        wait_for(client, lambda c: any(b["title"] == "From psql" for b in books(c).values()))


def test_rollback_sends_nothing(live, live_database_url, sql):
    with DDPClient(live.ws_url) as client:
        client.connect()
        client.subscribe("AllBooks")
        conn = psycopg2.connect(live_database_url)
        with conn.cursor() as cur:
            cur.execute("INSERT INTO bookstore_author (name, email) VALUES ('R', 'r@x') RETURNING id")
            cur.execute("INSERT INTO bookstore_book (title, author_id, pages, blurb) "
                        "VALUES ('Rolled back', %s, 1, '')", [cur.fetchone()[0]])
        conn.rollback()
        conn.close()
        marker = insert_book(sql, "Committed marker")
        messages = wait_for(client, lambda c: str(marker) in books(c))
        assert all("Rolled back" not in str(m) for m in messages)
        assert [b["title"] for b in books(client).values()] == ["Committed marker"]


def test_rows_enter_and_leave_a_filtered_publication(live, sql):
    small = insert_book(sql, "Small", 10)
    with DDPClient(live.ws_url) as client:
        client.connect()
        client.subscribe("BigBooks", 100)
        assert books(client) == {}
        sql("UPDATE bookstore_book SET pages = 150 WHERE id = %s", [small])
        messages = wait_for(client, lambda c: str(small) in books(c))
        assert messages[-1]["msg"] == "added"
        sql("UPDATE bookstore_book SET pages = 5 WHERE id = %s", [small])
        messages = wait_for(client, lambda c: str(small) not in books(c))
        assert messages[-1] == {"msg": "removed", "collection": BOOK, "id": str(small)}


def test_change_to_a_joined_table_moves_rows(live, sql):
    book = insert_book(sql, "Joined", email="old@example.com")
    with DDPClient(live.ws_url) as client:
        client.connect()
        client.subscribe("BooksByAuthorEmail", "new@example.com")
        assert books(client) == {}
        sql("UPDATE bookstore_author SET email = 'new@example.com' WHERE email = 'old@example.com'")
        wait_for(client, lambda c: str(book) in books(c))


def test_overlapping_subscriptions_merge_and_unsub_keeps_shared_docs(live, sql):
    book = insert_book(sql, "Shared", 500)
    with DDPClient(live.ws_url) as client:
        client.connect()
        all_books = client.subscribe("AllBooks")
        client.send({"msg": "sub", "id": "big", "name": "BigBooks", "params": [100]})
        assert client.recv() == {"msg": "ready", "subs": ["big"]}  # same document: no second "added"
        client.send({"msg": "unsub", "id": all_books})
        reply = client.recv()
        assert reply == {"msg": "removed", "collection": "bookstore.author", "id": "1"}
        assert client.recv() == {"msg": "nosub", "id": all_books}  # the book stays: BigBooks holds it
        assert str(book) in books(client)


def test_publication_errors(live):
    from ddpctl.api import MeteorError
    with DDPClient(live.ws_url) as client:
        client.connect()
        with pytest.raises(MeteorError) as info:
            client.subscribe("Explode")
        assert info.value.error == 500
        with pytest.raises(MeteorError) as info:
            client.subscribe("BigBooks", 1, 2, 3)
        assert (info.value.error, info.value.reason) == (400, "Match failed")
        with pytest.raises(MeteorError) as info:
            client.subscribe("BooksByAuthorEmail", 42)
        assert info.value.error == 400
    assert "deliberate failure in get_queries" in live.output()


def test_concurrent_writers_never_move_a_document_backwards(live, live_database_url, sql):
    book = insert_book(sql, "Counter", 0)
    with DDPClient(live.ws_url) as client:
        client.connect()
        client.subscribe("AllBooks")

        def writer():
            conn = psycopg2.connect(live_database_url)
            conn.autocommit = True
            with conn.cursor() as cur:
                for _ in range(50):
                    cur.execute("UPDATE bookstore_book SET pages = pages + 1 WHERE id = %s", [book])
            conn.close()

        threads = [threading.Thread(target=writer) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        messages = wait_for(client, lambda c: books(c)[str(book)]["pages"] == 200)
        pages = [m["fields"]["pages"] for m in messages if m.get("msg") == "changed"]
        assert pages == sorted(pages) and len(set(pages)) == len(pages)


def test_a_long_transaction_committing_after_a_later_one_is_not_lost(live, live_database_url, sql):
    first = insert_book(sql, "First", 1)
    second = insert_book(sql, "Second", 1)
    with DDPClient(live.ws_url) as client:
        client.connect()
        client.subscribe("AllBooks")
        long_tx = psycopg2.connect(live_database_url)
        with long_tx.cursor() as cur:  # takes the lower changelog id, commits last
            cur.execute("UPDATE bookstore_book SET title = 'long' WHERE id = %s", [first])
        sql("UPDATE bookstore_book SET title = 'short' WHERE id = %s", [second])
        wait_for(client, lambda c: books(c)[str(second)]["title"] == "short")
        time.sleep(1.5)  # the dispatcher polls past the gap a few times meanwhile
        assert books(client)[str(first)]["title"] == "First"
        long_tx.commit()
        long_tx.close()
        messages = wait_for(client, lambda c: books(c)[str(first)]["title"] == "long")
        assert messages[-1]["id"] == str(first)


def test_a_200_kb_row_arrives_whole(live, sql):
    book = insert_book(sql, "Big blurb")
    blurb = "x" * 100_000 + "é" * 50_000  # 200,000 bytes of UTF-8
    with DDPClient(live.ws_url) as client:
        client.connect()
        client.subscribe("AllBooks")
        sql("UPDATE bookstore_book SET blurb = %s WHERE id = %s", [blurb, book])
        wait_for(client, lambda c: books(c)[str(book)]["blurb"] == blurb)
    assert len(blurb.encode()) == 200_000


def test_sql_statements_per_save_do_not_grow_with_subscribers(live, sql):
    book = insert_book(sql, "Counted", 0)
    start = sql("SELECT coalesce(max(id), 0) FROM ddpctl_change", fetch=True)[0][0]
    with DDPClient(live.ws_url) as writer:
        writer.connect()
        alone = writer.call("orm", "save_counting_queries", book)
        sql("SELECT 1")
        watchers = [DDPClient(live.ws_url) for _ in range(100)]
        try:
            for w in watchers:
                w.connect()
                w.subscribe("AllBooks")
            watched = writer.call("orm", "save_counting_queries", book)
            for w in watchers:  # they really are live: every one sees the save
                wait_for(w, lambda c: books(c)[str(book)]["pages"] == 2)
        finally:
            for w in watchers:
                w.close()
    assert alone == watched == 1
    rows = sql("SELECT count(*) FROM ddpctl_change WHERE id > %s AND \"table\" = 'bookstore_book' "
               "AND \"row\" = %s AND op = 'U'", [start, str(book)], fetch=True)[0][0]
    assert rows == 2  # one changelog row per save, with or without subscribers


def test_killed_listen_connection_loses_nothing(live, live_database_url, sql):
    author_id = author(sql)
    with DDPClient(live.ws_url) as client:
        client.connect()
        client.subscribe("AllBooks")
        done = threading.Event()

        def writer():
            conn = psycopg2.connect(live_database_url)
            conn.autocommit = True
            with conn.cursor() as cur:
                for i in range(100):
                    cur.execute("INSERT INTO bookstore_book (title, author_id, pages, blurb) "
                                "VALUES (%s, %s, 0, '')", [f"stream-{i}", author_id])
                    time.sleep(0.005)
            conn.close()
            done.set()

        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(0.15)
        killed = sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "  # this test's server only
                     "WHERE application_name = 'ddpctl-dispatcher' AND datname = current_database()",
                     fetch=True)
        assert killed, "the dispatcher's LISTEN connection was not found"
        thread.join()
        messages = wait_for(client, lambda c: len(books(c)) == 100)
    added = [m["id"] for m in messages if m.get("msg") == "added" and m.get("collection") == BOOK]
    assert len(added) == len(set(added)) == 100  # every change once
    assert "reconnect" in live.output()


def test_postgresql_restart_loses_nothing(live, live_database_url, sql):
    import os

    if os.environ.get("DDPCTL_TEST_DATABASE_URL"):
        pytest.skip("restarts only the embedded PostgreSQL, not an external server")
    pgserver = pytest.importorskip("pgserver", reason="restarts the embedded PostgreSQL, not installed")
    from django.conf import settings
    from pgserver._commands import pg_ctl
    pgdata = settings.DATABASES["default"]["HOST"]
    author_id = author(sql)
    with DDPClient(live.ws_url) as client:
        client.connect()
        client.subscribe("AllBooks")
        sql("INSERT INTO bookstore_book (title, author_id, pages, blurb) "
            "SELECT 'before-' || i, %s, 0, '' FROM generate_series(1, 20) i", [author_id])
        # Stop PostgreSQL, then start it through pgserver, so that pgserver knows the new
        # postmaster and stops it when the test session ends (a plain `pg_ctl restart` would
        # leave it running).
        server = pgserver.get_server(Path(pgdata))
        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=Path(pgdata), user=server.system_user)
        server.ensure_postgres_running()
        conn = psycopg2.connect(live_database_url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("INSERT INTO bookstore_book (title, author_id, pages, blurb) "
                        "SELECT 'after-' || i, %s, 0, '' FROM generate_series(1, 20) i", [author_id])
        conn.close()
        messages = wait_for(client, lambda c: len(books(c)) == 40, timeout=30)
        added = [m["id"] for m in messages if m.get("msg") == "added" and m.get("collection") == BOOK]
        assert len(added) == len(set(added)) == 40
        assert client.call("books.count") == 40  # the server's own connections recovered too


def test_two_servers_on_one_database_both_deliver(start_server, clean, sql):
    one, two = start_server(), start_server()
    with DDPClient(one.ws_url) as a, DDPClient(two.sockjs_url) as b:
        for c in (a, b):
            c.connect()
            c.subscribe("AllBooks")
        via_b = b.call("books.add", "Through server two", "two@example.com", 2)
        wait_for(a, lambda c: str(via_b) in books(c))
        via_a = a.call("books.add", "Through server one", "one@example.com", 1)
        wait_for(b, lambda c: str(via_a) in books(c))
        via_sql = insert_book(sql, "Through SQL")
        for c in (a, b):
            wait_for(c, lambda c: str(via_sql) in books(c))


def test_workers_share_a_port_and_all_deliver(start_server, clean, sql):
    live = start_server("--workers", "2")
    clients = [DDPClient(live.ws_url) for _ in range(16)]
    try:
        pids = set()
        for c in clients:
            c.connect()
            pids.add(c.call("pid"))
            c.subscribe("AllBooks")
        assert len(pids) == 2
        book = insert_book(sql, "To every worker")
        for c in clients:
            wait_for(c, lambda c: str(book) in books(c))
    finally:
        for c in clients:
            c.close()
    assert live.stop() == 0


# -- visibility ---------------------------------------------------------------------------

def notes(client):
    return {doc["text"] for doc in client.collections.get("testapp.note", {}).values()}


def test_users_receive_only_rows_they_may_see(live, sql):
    with DDPClient(live.ws_url) as alice, DDPClient(live.ws_url) as bob, DDPClient(live.ws_url) as anon:
        for c in (alice, bob, anon):
            c.connect()
        alice.call("login_as", "alice")
        bob.call("login_as", "bob")
        for c in (alice, bob, anon):
            c.subscribe("MyNotes")
        alice.call("note", "alice private")
        bob_note = bob.call("note", "bob private")
        assert notes(alice) == {"alice private"} and notes(bob) == {"bob private"} and notes(anon) == set()
        # bob shares his note: everyone sees it; unshares: it is removed again
        sql("UPDATE testapp_note SET shared = true WHERE id = %s", [bob_note])
        for c in (alice, anon):
            wait_for(c, lambda c: "bob private" in notes(c))
        sql("UPDATE testapp_note SET shared = false WHERE id = %s", [bob_note])
        for c in (alice, anon):
            messages = wait_for(c, lambda c: "bob private" not in notes(c))
            assert messages[-1]["msg"] == "removed"
        assert "alice private" not in notes(bob) and notes(anon) == set()


def test_login_and_logout_rerun_subscriptions_with_only_the_differences(live, sql):
    with DDPClient(live.ws_url) as client:
        client.connect()
        client.subscribe("MyNotes")
        client.call("login_as", "carol")
        client.call("note", "carol's")
        client.call("note", "public", True)
        assert notes(client) == {"carol's", "public"}
        client.send({"msg": "method", "method": "logout", "id": "out", "params": []})
        replies = [client.recv()]
        while replies[-1]["msg"] != "result":
            replies.append(client.recv())
        # "public" stays, unsent; carol's note and her ``users`` document (the accounts app's
        # universal publication) go, before ``updated``.
        assert [m["msg"] for m in replies] == ["removed", "removed", "updated", "result"]
        assert sorted(m["collection"] for m in replies[:2]) == ["testapp.note", "users"]
        assert notes(client) == {"public"}


def test_a_subscription_made_as_the_server_opens_misses_no_change(start_server, clean, sql):
    """Issue 9.1: subscribe as soon as the port opens, write ~10 ms later, from another
    connection: the ``changed`` arrives (the server listens only once it has its position)."""
    book = insert_book(sql, "Racing")
    for round_ in range(10):
        live = start_server()
        try:
            with DDPClient(live.ws_url) as client:
                client.connect()
                client.send({"msg": "sub", "id": "race", "name": "AllBooks", "params": []})
                time.sleep(0.01 * (1 + round_ % 5))  # while the subscription's first query runs, or after
                title = f"round {round_}"
                sql("UPDATE bookstore_book SET title = %s WHERE id = %s", [title, book])
                wait_for(client, lambda c, title=title: books(c).get(str(book), {}).get("title") == title)
        finally:
            live.stop()


def test_a_transaction_open_across_the_server_start_is_delivered(start_server, clean, sql, live_database_url):
    """Issue 9.1: a transaction writes before the node starts, 20,000 changes are committed
    by others after that write, it commits after the node started: its change arrives."""
    book = insert_book(sql, "Old transaction")
    old = psycopg2.connect(live_database_url)
    try:
        with old.cursor() as cur:
            cur.execute("UPDATE bookstore_book SET title = 'committed late' WHERE id = %s", [book])
        sql("INSERT INTO bookstore_genre (name) SELECT 'bulk ' || g FROM generate_series(1, 20000) g")
        live = start_server()
        with DDPClient(live.ws_url) as client:
            client.connect()
            client.subscribe("AllBooks")
            assert books(client)[str(book)]["title"] == "Old transaction"
            old.commit()
            wait_for(client, lambda c: books(c)[str(book)]["title"] == "committed late")
    finally:
        old.close()


def test_no_connection_is_accepted_before_the_changelog_position_is_taken(live_database_url, clean, sql):
    """The deterministic form of the race above: while the changelog is locked the server
    cannot take its position, so it must not accept a subscription that could miss a change
    committed meanwhile."""
    import socket

    from conftest import SERVER_ARGS

    from ddpctl.testing import LiveServer

    book = insert_book(sql, "Locked start")
    blocker = psycopg2.connect(live_database_url)
    server = LiveServer(SERVER_ARGS, env={"DATABASE_URL": live_database_url})
    starting = threading.Thread(target=server.start)
    client = None
    try:
        with blocker.cursor() as cur:
            cur.execute("LOCK TABLE ddpctl_change IN ACCESS EXCLUSIVE MODE")
        starting.start()
        deadline = time.monotonic() + 3
        while client is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=0.5).close()
                client = DDPClient(server.ws_url)  # accepted: the old behaviour
                client.connect()
                client.subscribe("AllBooks")
            except OSError:
                time.sleep(0.05)
        with blocker.cursor() as cur:  # a change committed before the position can be taken
            cur.execute("UPDATE bookstore_book SET title = 'renamed' WHERE id = %s", [book])
        blocker.commit()
        starting.join()
        if client is None:
            client = DDPClient(server.ws_url)
            client.connect()
            client.subscribe("AllBooks")
        wait_for(client, lambda c: books(c).get(str(book), {}).get("title") == "renamed", timeout=5)
    finally:
        if client is not None:
            client.close()
        blocker.close()
        starting.join()
        server.stop()


def test_clients_subscribing_at_once_share_one_observer_and_all_receive_changes(live, sql):
    """Subscriptions started concurrently (each on its connection's greenlet, while another
    one's observer is still being made) join one observer; none is left orphaned."""
    book_id = insert_book(sql, "Dune")
    clients = [DDPClient(live.ws_url) for _ in range(20)]
    try:
        for client in clients:
            client.__enter__()
            client.connect()
        for client in clients:  # every sub on the wire before any ready is read
            client.send({"msg": "sub", "id": "s", "name": "AllBooks", "params": []})
        for client in clients:
            wait_for(client, lambda c: str(book_id) in books(c))
        sql("UPDATE bookstore_book SET title = 'Dune Messiah' WHERE id = %s", [book_id])
        for client in clients:
            wait_for(client, lambda c: books(c)[str(book_id)]["title"] == "Dune Messiah")
        assert clients[0].call("observers_of", "AllBooks") == [["('everyone',)", 20]]
    finally:
        for client in clients:
            client.__exit__(None, None, None)
