"""``ddpctl tail`` shows the values clients receive: each change's document through its
Collection (excluded fields never shown, EJSON values), or with ``--ddp`` the DDP message an
observer sends, read after the change.

Real ``ddpctl tail`` subprocesses, writes by ``psql`` and plain SQL, and a real client of a
real ``ddpctl serve`` whose messages tail's must equal."""
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import SERVER_ARGS, eventually
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_every_field import COLLECTION, DERIVED, UPDATES, call_raw, canonical, edge_values, insert
from test_live_data import BOOK, author, insert_book

from ddpctl.testing import DDPClient


class TailStream:
    """``ddpctl tail ARGS`` in the background; its lines as they come."""

    started = []  # every one, so that a failed test leaves none running (see end_tails)

    def __init__(self, url, *args):
        self.json = "--json" in args
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ddpctl", "tail", *args, *SERVER_ARGS],
            env={**os.environ, "DATABASE_URL": url}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        self.started.append(self.process)
        self.lines = queue.Queue()
        self.seen = []  # every line so far
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def next(self, timeout=15):
        """The next line (a record with --json)."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"tail wrote nothing within {timeout} s; so far: {self.seen[-5:]}") from None
        self.seen.append(line)
        return json.loads(line) if self.json else line

    def take(self, count):
        return [self.next() for _ in range(count)]

    def stop(self):
        self.process.send_signal(signal.SIGINT)
        _, err = self.process.communicate(timeout=20)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.process.returncode, err


@pytest.fixture(autouse=True)
def end_tails():
    """Stop the tails a test left running (it failed before stopping them)."""
    yield
    while TailStream.started:
        process = TailStream.started.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


def tails_listening(sql, count):
    """``count`` tails have taken their start position (they ran a statement after LISTEN)."""
    rows = sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ddpctl-tail' "
               "AND datname = current_database() AND query LIKE '%%pg_current_snapshot%%'", fetch=True)
    return rows[0][0] >= count


def psql(url, statement):
    from pgserver._commands import POSTGRES_BIN_PATH

    out = subprocess.run([str(Path(POSTGRES_BIN_PATH) / "psql"), url, "-X", "-q", "-A", "-t",
                          "-v", "ON_ERROR_STOP=1", "-c", statement], check=True, capture_output=True,
                         text=True)
    return out.stdout.strip()


def data_until_fence(client):
    """The data messages the client gets for the writes committed so far (a method call's
    write fence sends them before its result)."""
    _, data = call_raw(client, "pid")
    return data


@pytest.fixture
def owner(sql):
    (user_id,), = sql("INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, "
                      "email, is_staff, is_active, date_joined) VALUES ('!', false, 'owner-3f9c', '', '', "
                      "'', false, true, now()) RETURNING id", fetch=True)
    yield user_id
    sql("DELETE FROM auth_user WHERE id = %s", [user_id])


def test_tail_shows_what_the_clients_receive_for_psql_writes(start_server, clean, sql, live_database_url,
                                                            owner):
    server = start_server()
    values = TailStream(live_database_url, "--json")
    ddp = TailStream(live_database_url, "--json", "--ddp")
    eventually(lambda: tails_listening(sql, 2))
    writer = author(sql, "frank@herbert.com")
    values.take(1), ddp.take(1)  # the author
    with DDPClient(server.ws_url) as client:
        client.connect()
        client.subscribe("AllBooks")
        book = psql(live_database_url,
                    "INSERT INTO bookstore_book (title, author_id, pages, blurb, owner_id) "
                    f"VALUES ('Dune', {writer}, 0, 'Spice', {owner}) RETURNING id")
        (received,) = data_until_fence(client)
        inserted, message = values.next(), ddp.next()
        expected = {"title": "Dune", "author_id": str(writer), "pages": 0, "published": None,
                    "blurb": "Spice", "genres_ids": []}
        assert inserted["op"] == "insert" and inserted["collection"] == BOOK and inserted["id"] == book
        assert inserted["document"] == expected
        assert message["ddp"] == received == {"msg": "added", "collection": BOOK, "id": book,
                                              "fields": expected}

        # The rename: the new title, as a `changed` with that field, what the client got.
        psql(live_database_url, f"UPDATE bookstore_book SET title = 'Dune Messiah' WHERE id = {book}")
        (received,) = data_until_fence(client)
        renamed, message = values.next(), ddp.next()
        assert renamed["op"] == "update" and renamed["fields"] == ["title"]
        assert renamed["document"] == {**expected, "title": "Dune Messiah"}
        assert message["ddp"] == received == {"msg": "changed", "collection": BOOK, "id": book,
                                              "fields": {"title": "Dune Messiah"}}

        # An excluded field changes: clients get nothing, and tail shows nothing of it.
        psql(live_database_url, f"UPDATE bookstore_book SET owner_id = NULL WHERE id = {book}")
        assert data_until_fence(client) == []
        hidden, message = values.next(), ddp.next()
        assert hidden["op"] == "update" and hidden["fields"] == [] and message["ddp"] is None

        # Several fields, EJSON values (a date is {"$date": ms}); a genre through the m2m table.
        psql(live_database_url, f"UPDATE bookstore_book SET pages = 412, published = '1965-08-01' "
                                f"WHERE id = {book}")
        (received,) = data_until_fence(client)
        message = ddp.next()
        assert message["ddp"] == received
        assert received["fields"] == {"pages": 412, "published": {"$date": -139449600000}}
        assert values.next()["document"]["published"] == {"$date": -139449600000}
        genre = psql(live_database_url, "INSERT INTO bookstore_genre (name) VALUES ('SF') RETURNING id")
        values.next(), ddp.next()  # the genre (no subscriber)
        psql(live_database_url,
             f"INSERT INTO bookstore_book_genres (book_id, genre_id) VALUES ({book}, {genre})")
        (received,) = data_until_fence(client)
        linked, message = values.next(), ddp.next()
        assert linked["table"] == "bookstore_book" and linked["fields"] == ["genres_ids"]
        assert linked["document"]["genres_ids"] == [genre]
        assert message["ddp"] == received == {"msg": "changed", "collection": BOOK, "id": book,
                                              "fields": {"genres_ids": [genre]}}

        # A delete: the id only.
        psql(live_database_url,
             f"DELETE FROM bookstore_book_genres; DELETE FROM bookstore_book WHERE id = {book}")
        received = data_until_fence(client)
        assert received[-1] == {"msg": "removed", "collection": BOOK, "id": book}
        records = [values.next(), values.next()]
        messages = [ddp.next(), ddp.next()]
        deleted = records[-1]
        assert deleted["op"] == "delete" and deleted["id"] == book and "document" not in deleted
        assert messages[-1]["ddp"] == {"msg": "removed", "collection": BOOK, "id": book}

    for stream in (values, ddp):
        code, err = stream.stop()
        assert code == 0 and "Traceback" not in err, err
        text = "\n".join(stream.seen)
        assert "owner" not in text and "owner-3f9c" not in text  # neither the field nor its value


def test_gone_rows_deletes_truncates_and_plain_output(clean, sql, ddpctl, live_database_url):
    """Values are read when tail shows a change: a row deleted since shows as gone."""
    start = sql("SELECT coalesce(max(id), 0) FROM ddpctl_change", fetch=True)[0][0]
    writer = author(sql, "gone@example.com")
    (book,), = sql("INSERT INTO bookstore_book (title, author_id, pages, blurb) "
                   "VALUES ('Ephemera', %s, 1, '') RETURNING id", [writer], fetch=True)
    sql("UPDATE bookstore_book SET title = 'Ephemera II' WHERE id = %s", [book])
    sql("DELETE FROM bookstore_book WHERE id = %s", [book])
    sql("TRUNCATE bookstore_genre CASCADE")  # and the book-genre table: a truncate of the books' too
    since = ("--since", str(start + 1), "-c", BOOK, "-c", "bookstore.author", "-c", "bookstore.genre")

    records = TailStream(live_database_url, "--json", *since)
    got = {(r["table"], r["op"]): r for r in records.take(6)}
    assert got[("bookstore_author", "insert")]["document"] == {"name": "A", "email": "gone@example.com"}
    assert got[("bookstore_book", "insert")]["document"] is None  # gone when read
    assert got[("bookstore_book", "update")]["document"] is None
    assert got[("bookstore_book", "update")]["fields"] == ["title"]
    assert "document" not in got[("bookstore_book", "delete")]
    assert got[("bookstore_genre", "truncate")]["id"] is None and "document" not in got[("bookstore_genre",
                                                                                        "truncate")]
    assert records.stop()[0] == 0

    lines = TailStream(live_database_url, *since)
    plain = [line.split("\t") for line in lines.take(6)]
    assert lines.stop()[0] == 0
    assert plain[0][2:] == ["insert", "bookstore.author", str(writer),
                            '{"name": "A", "email": "gone@example.com"}']
    assert plain[1][2:] == ["insert", BOOK, str(book), "(gone when read)"]
    assert plain[2][2:] == ["update", BOOK, str(book), "[title] (gone when read)"]
    assert plain[3][2:] == ["delete", BOOK, str(book)]
    assert sorted(line[2:] for line in plain[4:]) == [["truncate", BOOK, "*"],
                                                      ["truncate", "bookstore.genre", "*"]]

    lines = TailStream(live_database_url, "--ddp", *since)
    plain = [line.split("\t") for line in lines.take(6)]
    assert lines.stop()[0] == 0
    assert json.loads(plain[0][5]) == {"msg": "added", "collection": "bookstore.author", "id": str(writer),
                                       "fields": {"name": "A", "email": "gone@example.com"}}
    assert plain[1][5] == plain[2][5] == "(gone when read: nothing sent)"
    assert json.loads(plain[3][5]) == {"msg": "removed", "collection": BOOK, "id": str(book)}

    bare = TailStream(live_database_url, "--json", "--no-values", *since)
    records = bare.take(6)
    assert bare.stop()[0] == 0
    assert not any("document" in r for r in records) and records[2]["fields"] == ["title"]

    both = ddpctl("tail", "--ddp", "--no-values", check=False)
    assert both.returncode == 2 and "--no-values" in both.stderr
    help_text = ddpctl("tail", "--help").stdout
    assert "current when the row is read" in " ".join(help_text.split())


def test_a_lost_connection_while_reading_values_loses_no_change(clean, sql, live_database_url):
    tail = TailStream(live_database_url, "--json")
    eventually(lambda: tails_listening(sql, 1))
    first = insert_book(sql, "Before")
    assert [r["document"]["title"] for r in tail.take(2) if r["table"] == "bookstore_book"] == ["Before"]
    start = sql("SELECT coalesce(max(id), 0) FROM ddpctl_change", fetch=True)[0][0]
    killed = sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE application_name = 'ddpctl-tail-values' AND datname = current_database()", fetch=True)
    assert killed == [(True,)]
    second = insert_book(sql, "After")
    sql("UPDATE bookstore_book SET pages = 3 WHERE id IN (%s, %s)", [first, second])
    expected = sql('SELECT id, "row" FROM ddpctl_change WHERE id > %s ORDER BY id', [start], fetch=True)
    records = tail.take(len(expected))
    assert [(r["position"], r["id"]) for r in records] == [tuple(row) for row in expected]
    books = [r for r in records if r["table"] == "bookstore_book"]
    assert [(r["op"], r["id"], r["document"]["pages"]) for r in books] == [
        ("insert", str(second), 3), ("update", str(first), 3), ("update", str(second), 3)]
    code, err = tail.stop()
    assert code == 0 and "reconnecting" in err and "Traceback" not in err, err


@pytest.fixture
def every(start_server, sql):
    sql("TRUNCATE testapp_everything RESTART IDENTITY CASCADE")
    return start_server()


def test_every_field_type_shows_as_the_client_receives_it(every, sql, live_database_url):
    """Each Django/PostgreSQL field type: tail's document and `changed` carry the EJSON the
    client receives (the expected wire values are written out in test_every_field)."""
    has_hstore = sql("SELECT udt_name FROM information_schema.columns "
                     "WHERE table_name = 'testapp_everything' AND column_name = 'tags'",
                     fetch=True)[0][0] == "hstore"
    values = edge_values(has_hstore)
    tail = TailStream(live_database_url, "--json", "--ddp", "-c", COLLECTION)
    eventually(lambda: tails_listening(sql, 1))
    with DDPClient(every.ws_url) as client:
        client.connect()
        client.subscribe("AllEverything")
        row = insert(sql, {c: sql_value for c, (sql_value, _) in values.items()})
        (received,) = data_until_fence(client)
        record = tail.next()
        expected = {c: wire for c, (_, wire) in values.items()} | DERIVED
        assert canonical({c: v for c, v in record["document"].items() if has_hstore or c != "tags"}) == \
            canonical(expected)
        assert canonical(record["ddp"]) == canonical(received)
        for column, (sql_value, wire) in UPDATES.items():
            if column == "tags" and not has_hstore:
                continue
            sql(f'UPDATE testapp_everything SET "{column}" = %s WHERE id = %s', [sql_value, row])
            (received,) = data_until_fence(client)
            record = tail.next()
            assert canonical(record["ddp"]) == canonical(received), column
            assert canonical(record["document"][column]) == canonical(wire), column
    code, err = tail.stop()
    assert code == 0, err


# -- property: for any values written, tail's document is the client's copy ------------------

texts = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=40)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 63), 2 ** 63 - 1),
                         st.floats(allow_nan=False, allow_infinity=False), texts)
json_data = st.recursive(json_scalars, lambda children: st.one_of(
    st.lists(children, max_size=3),
    # (two keys at least: the model's DataDecoder turns {"decimal": x} and {"opaque": x} into objects)
    st.dictionaries(texts, children, min_size=2, max_size=3)), max_leaves=8)
row_values = st.fixed_dictionaries({}, optional={
    "text": texts,
    "real": st.floats(),
    "amount": st.decimals(min_value=-10 ** 19, max_value=10 ** 19, places=10, allow_nan=False),
    "moment": st.datetimes(timezones=st.just(__import__("datetime").UTC)),
    "blob": st.binary(max_size=20),
    "big": st.integers(-(2 ** 63), 2 ** 63 - 1),
    "flag": st.one_of(st.none(), st.booleans()),
    "data": json_data,
}).filter(bool)


def test_property_tail_document_equals_the_clients_copy(every, sql, live_database_url):
    import psycopg2.extras

    from ddpctl.ddp.ejson import to_json_value

    tail = TailStream(live_database_url, "--json", "--ddp", "-c", COLLECTION)
    eventually(lambda: tails_listening(sql, 1))
    with DDPClient(every.ws_url) as client:
        client.connect()
        client.subscribe("AllEverything")
        row = insert(sql, {"integer": 1})
        data_until_fence(client)
        tail.next()

        position = [sql("SELECT coalesce(max(id), 0) FROM ddpctl_change", fetch=True)[0][0]]

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        @given(row_values)
        def write_and_compare(update):
            params = [psycopg2.extras.Json(v) if c == "data" else
                      psycopg2.Binary(v) if c == "blob" else v for c, v in update.items()]
            assignments = ", ".join(f'"{c}" = %s' for c in update)
            sql(f"UPDATE testapp_everything SET {assignments} WHERE id = %s", [*params, row])
            received = data_until_fence(client)
            (count, last), = sql("SELECT count(*), max(id) FROM ddpctl_change WHERE id > %s", [position[0]],
                                 fetch=True)
            if not count:  # the same values again: no change recorded, nothing sent
                assert received == []
                return
            position[0] = last
            (record,) = tail.take(count)
            assert canonical(record["document"]) == \
                canonical(to_json_value(client.collections[COLLECTION][str(row)]))
            # What the client got is part of tail's `changed`, which names every column the
            # changelog recorded (a client is sent only the values it can tell apart).
            for message in received:
                assert record["ddp"]["msg"] == "changed"
                for name, value in message["fields"].items():
                    assert canonical(record["ddp"]["fields"][name]) == canonical(value), name

        write_and_compare()
    code, err = tail.stop()
    assert code == 0, err


# -- hostile names and odd keys: replaying tail --ddp gives what a subscriber holds -----------

HOSTILE_TABLES = ["Order User's Table", "Select Tag's", "user", "Group"]
ODD = "Ünï 'quoted' \"double\" \\ back % ; --"
HOSTILE_WRITES = [  # (method args) or ("sql", statement)
    ("save", ODD, {"o": 1, "n": "n1"}),
    ("save", ODD, {"o": 2, "n": "N", "e": "E", "key": "K", "value": "V", "row": "W", "table": "T",
                   "op": "OP", "fields": "F", "select": "S", "id": 7}),
    ("update", [ODD], {"o": 5, "key": "k2"}),
    ("bulk_create", [["b 1", 10], ["b'2", 20]]),
    ("tag", ODD, "red"),  # a to_field foreign key with db_column "order"; a many-to-many add
    ("untag", ODD, "red"),
    ("rename", "b 1", "b 1 renamed"),  # the primary key changes: removed, then added
    ("sql", 'UPDATE "Order User\'s Table" SET o = 99, "SELECT" = \'raw\', "order" = NULL'),
    ("delete", ["b'2"]),
    ("pair", 1, 'a "b" ü', 5),  # a composite primary key: a JSON array id
    ("pair", 1, 'a "b" ü', 6),
    ("sql", 'UPDATE "user" SET "N" = \'renamed\' WHERE o = 1'),
    ("tiny", 1),
    ("sql", 'DELETE FROM "user"; DELETE FROM "Group"; DELETE FROM "Order User\'s Table"; '
            'DELETE FROM "Select Tag\'s"'),
]


def apply(replica, message):
    """A DDP data message applied to ``replica`` ({collection: {id: fields}}, wire values)."""
    docs = replica.setdefault(message["collection"], {})
    if message["msg"] == "added":
        docs[message["id"]] = dict(message["fields"])
    elif message["msg"] == "changed":
        docs[message["id"]].update(message["fields"])
    else:
        del docs[message["id"]]


def test_replaying_tail_ddp_gives_what_a_subscriber_holds(start_server, sql, live_database_url):
    """Hostile table and column names, a char, UUID, composite and small-int primary key,
    a to_field foreign key, many-to-many: every write (ORM or SQL), tail's `--ddp` messages
    applied in order leave exactly the documents the subscriber holds."""
    from ddpctl.ddp.ejson import to_json_value

    server = start_server()
    collections = ["testapp.hostile", "testapp.hostiletag", "testapp.hostilepair", "testapp.tiny"]
    tail = TailStream(live_database_url, "--json", "--ddp", *(a for c in collections for a in ("-c", c)))
    eventually(lambda: tails_listening(sql, 1))
    with DDPClient(server.ws_url) as client:
        client.connect()
        client.subscribe("HostileAll")
        replica = json.loads(json.dumps(to_json_value(client.collections)))  # a copy: nothing shared
        position = sql("SELECT coalesce(max(id), 0) FROM ddpctl_change", fetch=True)[0][0]
        for write in HOSTILE_WRITES:
            if write[0] == "sql":
                sql(write[1])
                data_until_fence(client)
            else:
                call_raw(client, "hostile", *write)
            (count, last), = sql('SELECT count(*), max(id) FROM ddpctl_change WHERE id > %s '
                                 'AND "table" = ANY(%s)', [position, HOSTILE_TABLES], fetch=True)
            position = last or position
            for record in tail.take(count):
                if record["ddp"] is not None:
                    apply(replica, record["ddp"])
            held = to_json_value(client.collections)
            assert canonical({c: replica.get(c, {}) for c in collections}) == \
                canonical({c: held.get(c, {}) for c in collections}), write
        assert not any(held.get(c) for c in collections)  # all gone at the end
    code, err = tail.stop()
    assert code == 0 and "Traceback" not in err, err


@pytest.mark.parametrize(("name", "warned"), [("nosuch", True), ("bookstore_boook", True), (BOOK, False),
                                              ("bookstore_book", False), ("ddpctl_change", False)])
def test_a_collection_filter_naming_nothing_is_warned_of(ddpctl, name, warned):
    """``-c`` takes a collection or a table name; one that names neither (a typo) would
    match nothing in silence: tail and replay say so on stderr."""
    # An empty FILE (stdin): nothing to replay, whatever the changelog holds, so it ends at once.
    result = ddpctl("replay", "-", "-c", name, "--dry-run", "--timeout", "1", input="", check=False)
    assert (f"no Collection and no table is named {name!r}" in result.stderr) is warned, result.stderr
    assert "Traceback" not in result.stderr
