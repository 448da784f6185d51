"""Change capture on any schema, and of every table a publication reads.

- hostile names: a model whose table, columns and primary key collide with SQL keywords
  and with the identifiers a trigger might use; every ORM write path reaches a subscriber;
- hypothesis: tables with random legal identifiers (quotes, spaces, unicode, keywords),
  int/text/uuid/composite keys: INSERT, UPDATE (also of the key), DELETE are recorded right;
- tables without a Collection that a visibility rule or a run-time queryset reads are
  captured (by ``migrate``, or by the serving node before the observer's first query).
"""
import json
import uuid

import pytest
from conftest import wait_for
from django.db import connection
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ddpctl.livedata import capture
from ddpctl.testing import DDPClient

HOSTILE = "testapp.hostile"



def docs(client, name):
    return client.collections.get(name, {})


@pytest.fixture
def live(start_server, sql):
    sql('TRUNCATE "Order User\'s Table", "Select Tag\'s", "user", "Group", testapp_team, testapp_membership, '
        "testapp_teamdoc, testapp_doclabel CASCADE")
    return start_server()


# -- hostile names, end to end ---------------------------------------------------------

def test_every_write_path_on_a_hostile_model_reaches_a_subscriber(live, sql):
    odd = "Ünï 'quoted' \"double\" \\ back % ; --"
    with DDPClient(live.ws_url) as client:
        client.connect()
        client.subscribe("HostileAll")
        # save(): create, then update every trigger-ish column
        assert client.call("hostile", "save", odd, {"o": 1, "n": "n1"}) == odd
        assert docs(client, HOSTILE)[odd]["o"] == 1
        values = {"o": 2, "n": "N", "e": "E", "k": 3, "j": "J", "r": "R", "key": "K", "value": "V",
                  "row": "W", "table": "T", "op": "OP", "fields": "F", "new_rows": "NR", "old_rows": "OR",
                  "select": "S", "id": 7}
        client.call("hostile", "save", odd, values)
        assert {k: docs(client, HOSTILE)[odd][k] for k in values} == values
        # QuerySet.update()
        client.call("hostile", "update", [odd], {"o": 5, "key": "k2"})
        assert (docs(client, HOSTILE)[odd]["o"], docs(client, HOSTILE)[odd]["key"]) == (5, "k2")
        # bulk_create()
        created = client.call("hostile", "bulk_create", [["b 1", 10], ["b'2", 20], ['b"3', 30]])
        assert {i: docs(client, HOSTILE)[i]["o"] for i in created} == {"b 1": 10, "b'2": 20, 'b"3': 30}
        # many-to-many add/remove through a hostile through table; to_field foreign key
        client.call("hostile", "tag", odd, "red")
        assert docs(client, HOSTILE)[odd]["tag_id"] == "red"
        assert len(docs(client, HOSTILE)[odd]["tags_ids"]) == 1
        assert [t["label"] for t in docs(client, "testapp.hostiletag").values()] == ["red"]
        client.call("hostile", "untag", odd, "red")
        assert docs(client, HOSTILE)[odd]["tags_ids"] == []
        # an UPDATE that changes the primary key: the old document goes, the new one comes
        client.call("hostile", "rename", "b 1", "b 1 renamed")
        assert "b 1" not in docs(client, HOSTILE) and docs(client, HOSTILE)["b 1 renamed"]["o"] == 10
        # delete()
        client.call("hostile", "delete", ["b'2", 'b"3'])
        assert set(docs(client, HOSTILE)) == {odd, "b 1 renamed"}
        # raw SQL from another connection
        sql('UPDATE "Order User\'s Table" SET o = 99, "SELECT" = \'raw\' WHERE "Key \'Id\' ü" = %s', [odd])
        wait_for(client, lambda c: docs(c, HOSTILE)[odd]["select"] == "raw")
        assert docs(client, HOSTILE)[odd]["o"] == 99
        sql('DELETE FROM "Order User\'s Table" WHERE "Key \'Id\' ü" = %s', ["b 1 renamed"])
        wait_for(client, lambda c: "b 1 renamed" not in docs(c, HOSTILE))
        # a composite primary key: document id is the JSON array of its parts
        pair_id = client.call("hostile", "pair", 1, 'a "b" ü', 5)
        assert pair_id == json.dumps(["1", 'a "b" ü'], ensure_ascii=False)
        assert docs(client, "testapp.hostilepair")[pair_id]["value"] == 5
        client.call("hostile", "pair", 1, 'a "b" ü', 6)
        assert docs(client, "testapp.hostilepair")[pair_id]["value"] == 6
        sql('UPDATE "user" SET value = 7 WHERE o = 1')
        wait_for(client, lambda c: docs(c, "testapp.hostilepair")[pair_id]["value"] == 7)
        client.call("hostile", "unpair", 1, 'a "b" ü')
        assert pair_id not in docs(client, "testapp.hostilepair")
        # SmallAutoField in a table named like a keyword
        tiny = client.call("hostile", "tiny", 1)
        assert docs(client, "testapp.tiny")[str(tiny)]["value"] == 2
    assert "Traceback" not in live.output()


# -- any legal identifier, any key type: the triggers record the right rows ----------------

SYSTEM_COLUMNS = {"tableoid", "xmin", "cmin", "xmax", "cmax", "ctid", "oid"}
TRICKY = ["o", "n", "e", "k", "j", "r", "key", "value", "id", "row", "table", "op", "fields", "new_rows",
          "old_rows", "order", "user", "select", "Mixed Case", 'a"b', "a'b", "$1", "%s", "%I", "%1$s", "a\\b",
          "ddpctl_change", "new_rows n", "1"]
identifier = st.one_of(
    st.sampled_from(TRICKY),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            min_size=1, max_size=12),
).filter(lambda s: len(s.encode()) <= 63 and s.lower() not in SYSTEM_COLUMNS)


def quote(name):
    """A quoted identifier for a statement run with params (``%`` doubled)."""
    return '"' + name.replace('"', '""').replace("%", "%%") + '"'


@st.composite
def schemas(draw):
    names = draw(st.lists(identifier, min_size=4, max_size=6, unique_by=lambda s: s.encode()))
    table, *columns = names
    nkeys = draw(st.integers(1, 2))
    key_types = [draw(st.sampled_from(["int", "text", "uuid"])) for _ in range(nkeys)]
    return table, columns[:nkeys], key_types, columns[nkeys:]


def key_value(kind, i):
    return {"int": i, "text": f"k'{i}\" ü \\ {{}}", "uuid": uuid.UUID(int=i)}[kind]


def key_text(values):
    if len(values) == 1:
        return str(values[0])
    return json.dumps([str(v) for v in values], ensure_ascii=False)


@pytest.mark.django_db(transaction=True)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=schemas())
def test_triggers_record_every_change_on_any_identifiers(schema):
    table, keys, key_types, others = schema
    cols = ", ".join([*(f"{quote(k)} {t}" for k, t in zip(keys, key_types, strict=True)),
                      *(f"{quote(c)} int" for c in others)])
    target = capture.Target(table, tuple(keys))
    rows = [tuple(key_value(t, i) for t in key_types) for i in (1, 2, 3)]
    key_list = ", ".join(quote(k) for k in keys)
    with connection.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", [quote(table).replace("%%", "%")])
        assume(cur.fetchone()[0] is None)  # never one of the app's tables
        cur.execute(f"CREATE TABLE {quote(table)} ({cols}, PRIMARY KEY ({key_list}))", [])
        try:
            capture._create(cur, target)
            cur.execute("SELECT coalesce(max(id), 0) FROM ddpctl_change")
            start = cur.fetchone()[0]
            placeholders = ", ".join(["%s"] * (len(keys) + len(others)))
            cur.executemany(f"INSERT INTO {quote(table)} VALUES ({placeholders})",
                            [(*r, *range(len(others))) for r in rows])
            first = quote(others[0])
            cur.execute(f"UPDATE {quote(table)} SET {first} = {first} + 1", [])
            cur.execute(f"UPDATE {quote(table)} SET {first} = {first}", [])  # changes nothing: not recorded
            where = " AND ".join(f"{quote(k)} = %s" for k in keys)
            cur.execute(f"UPDATE {quote(table)} SET {quote(keys[0])} = %s WHERE {where}",
                        [key_value(key_types[0], 9), *rows[0]])
            cur.execute(f"DELETE FROM {quote(table)} WHERE {where}", list(rows[1]))
            cur.execute(f"TRUNCATE {quote(table)}", [])
            cur.execute('SELECT "table", op, "row", fields FROM ddpctl_change WHERE id > %s ORDER BY id',
                        [start])
            got = cur.fetchall()
        finally:
            cur.execute(f"DROP TABLE {quote(table)}", [])
    assert {t for t, *_ in got} == {table}
    moved = (key_value(key_types[0], 9), *rows[0][1:])
    expected = ([("I", key_text(r), None) for r in rows]
                + [("U", key_text(r), [others[0]]) for r in rows]
                + [("D", key_text(rows[0]), None), ("I", key_text(moved), None)]
                + [("D", key_text(rows[1]), None)]
                + [("T", None, None)])
    assert sorted(map(repr, [(op, row, f) for _, op, row, f in got])) == sorted(map(repr, expected))


# -- every table a publication reads is captured ------------------------------------------

def team_with_docs(sql, name, titles):
    team = sql("INSERT INTO testapp_team (name) VALUES (%s) RETURNING id", [name], fetch=True)[0][0]
    ids = [sql("INSERT INTO testapp_teamdoc (team_id, title) VALUES (%s, %s) RETURNING id", [team, t],
               fetch=True)[0][0] for t in titles]
    return team, ids


def titles(client):
    return {d["title"] for d in docs(client, "testapp.teamdoc").values()}


def test_visibility_through_a_table_without_a_collection_is_live(live, sql):
    """Membership has no Collection; TeamDocs.visible() reads it: adding or deleting a
    membership adds or removes the team's documents, with no edit of the documents."""
    red, _ = team_with_docs(sql, "red", ["r1", "r2"])
    team_with_docs(sql, "blue", ["b1"])
    with DDPClient(live.ws_url) as client:
        client.connect()
        user = client.call("login_as", "member")
        client.subscribe("MyTeamDocs")
        assert titles(client) == set()
        sql("INSERT INTO testapp_membership (user_id, team_id) VALUES (%s, %s)", [user, red])
        wait_for(client, lambda c: titles(c) == {"r1", "r2"})
        sql("DELETE FROM testapp_membership WHERE user_id = %s", [user])
        wait_for(client, lambda c: titles(c) == set())


def test_a_table_only_a_run_time_queryset_reads_is_captured_by_the_server(live, sql):
    """LabelledDocs(label) reads testapp_doclabel, which nothing static reads: the server
    installs its triggers before the observer's first query, and says so in its log."""
    for op in "iudt":
        sql(f"DROP TRIGGER IF EXISTS ddpctl_capture_{op} ON testapp_doclabel")
    team, (d1, d2) = team_with_docs(sql, "green", ["g1", "g2"])
    with DDPClient(live.ws_url) as client:
        client.connect()
        user = client.call("login_as", "labeller")
        sql("INSERT INTO testapp_membership (user_id, team_id) VALUES (%s, %s)", [user, team])
        client.subscribe("LabelledDocs", "hot")
        assert titles(client) == set()
        sql("INSERT INTO testapp_doclabel (doc_id, label) VALUES (%s, 'hot'), (%s, 'cold')", [d1, d2])
        wait_for(client, lambda c: titles(c) == {"g1"})
        sql("UPDATE testapp_doclabel SET label = 'hot' WHERE doc_id = %s", [d2])
        wait_for(client, lambda c: titles(c) == {"g1", "g2"})
        sql("DELETE FROM testapp_doclabel WHERE doc_id = %s", [d1])
        wait_for(client, lambda c: titles(c) == {"g2"})
    assert "'testapp_doclabel' had no change-capture triggers" in live.output()
    assert "DDPCTL_CAPTURE_MODELS" in live.output()


def test_migrate_check_names_tables_a_visibility_rule_reads(ddpctl, sql):
    sql("DROP TRIGGER ddpctl_capture_u ON testapp_membership")
    try:
        result = ddpctl("migrate", "--check", check=False)
        assert result.returncode == 1
        assert "testapp_membership" in result.stderr
    finally:
        ddpctl("migrate", "--noinput")
    assert ddpctl("migrate", "--check").returncode == 0


@pytest.mark.django_db(transaction=True)
def test_a_table_that_cannot_be_captured_is_named_with_the_fix():
    from django.core.checks import run_checks

    with connection.cursor() as cur:
        cur.execute("DROP TRIGGER ddpctl_capture_i ON testapp_membership")
        cur.execute("CREATE TABLE unowned_h4 (id int PRIMARY KEY)")
        cur.execute("DO $$ BEGIN CREATE ROLE ddpctl_no_trigger_h4; "
                    "EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        cur.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO ddpctl_no_trigger_h4")
    try:
        warnings = [w for w in run_checks(databases=["default"]) if w.id == "ddpctl.W001"]
        assert len(warnings) == 1 and "testapp_membership" in warnings[0].msg
        capture._captured.discard("unowned_h4")
        with connection.cursor() as cur:
            cur.execute("SET ROLE ddpctl_no_trigger_h4")
        with pytest.raises(capture.CaptureError, match="'unowned_h4'.*DDPCTL_CAPTURE_MODELS"):
            capture.ensure_captured(["unowned_h4"])
    finally:
        with connection.cursor() as cur:
            cur.execute("RESET ROLE")
            cur.execute("DROP TABLE unowned_h4")
            cur.execute("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM ddpctl_no_trigger_h4")
            cur.execute("DROP ROLE ddpctl_no_trigger_h4")
        capture.install()
    assert capture.missing() == []


@pytest.mark.django_db(transaction=True)
def test_a_writer_with_another_search_path_is_captured():
    """The trigger functions name ddpctl_change and each other schema-qualified."""
    with connection.cursor() as cur:
        cur.execute("SELECT coalesce(max(id), 0) FROM ddpctl_change")
        start = cur.fetchone()[0]
        cur.execute("SET search_path TO pg_catalog")
        try:
            cur.execute('INSERT INTO public."user" (o, "N", value) VALUES (1, \'x\', 1), (2, \'y\', 2)')
            cur.execute('UPDATE public."user" SET value = value + 1')
        finally:
            cur.execute("RESET search_path")
        cur.execute('SELECT op, "row", fields FROM ddpctl_change WHERE id > %s AND "table" = %s ORDER BY id',
                    [start, "user"])
        rows = cur.fetchall()
    assert sorted(rows) == sorted([("I", '["1", "x"]', None), ("I", '["2", "y"]', None),
                                   ("U", '["1", "x"]', ["value"]), ("U", '["2", "y"]', ["value"])])


@pytest.mark.django_db(transaction=True)
def test_an_observer_listens_to_exactly_the_tables_its_sql_reads():
    from bookstore.models import Book
    from django.db.models import Exists, OuterRef
    from testapp.models import Membership, Note, TeamDoc

    from ddpctl.livedata.collection import collections
    from ddpctl.livedata.observer import Cursor

    def tables(queryset):
        return Cursor(collections.for_model(queryset.model), queryset).tables

    assert tables(Book.objects.filter(author__email="x")) == {"bookstore_book", "bookstore_author"}
    # SQL Django does not quote: extra() and a table behind a view
    assert tables(Book.objects.extra(where=["author_id IN (SELECT id FROM bookstore_author)"])) == {
        "bookstore_book", "bookstore_author"}
    with connection.cursor() as cur:
        cur.execute("CREATE OR REPLACE VIEW h4_member_view AS SELECT team_id FROM testapp_membership")
    try:
        assert tables(TeamDoc.objects.extra(where=["team_id IN (SELECT team_id FROM h4_member_view)"])) == {
            "testapp_teamdoc", "testapp_membership"}
    finally:
        with connection.cursor() as cur:
            cur.execute("DROP VIEW h4_member_view")
    # a correlated subquery; and no quoted text that is not a table (values, aliases, columns)
    member = Membership.objects.filter(team=OuterRef("team"))
    assert tables(TeamDoc.objects.filter(Exists(member))) == {"testapp_teamdoc", "testapp_membership"}
    assert tables(Note.objects.filter(text='"Group" "user"')) == {"testapp_note"}
    assert tables(Note.objects.none()) == {"testapp_note"}


@pytest.mark.django_db(transaction=True)
def test_a_materialized_view_is_reported_not_fatal(caplog):
    """Triggers cannot watch a materialized view: the subscription still works, the log says why."""
    with connection.cursor() as cur:
        cur.execute("CREATE MATERIALIZED VIEW h4_mat AS SELECT 1 AS one")
    try:
        capture.ensure_captured(["h4_mat", "testapp_note"])
        assert "'h4_mat', which change-capture triggers cannot watch" in caplog.text
    finally:
        with connection.cursor() as cur:
            cur.execute("DROP MATERIALIZED VIEW h4_mat")


@pytest.fixture
def server_role(sql, live_database_url):
    """A login role that is not the tables' owner, like a production server's; yields its URL."""
    from urllib.parse import urlsplit, urlunsplit

    role = "ddpctl_server_h4"
    sql(f"DO $$ BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    sql(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}; "
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
    parts = urlsplit(live_database_url)
    yield role, urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}"))
    sql(f"DROP OWNED BY {role}; DROP ROLE {role}")


def test_a_server_role_without_trigger_privilege_ends_the_subscription_naming_the_table(
        start_server, sql, server_role, ddpctl):
    from ddpctl.api import MeteorError

    role, url = server_role
    for op in "iudt":
        sql(f"DROP TRIGGER IF EXISTS ddpctl_capture_{op} ON testapp_doclabel")
    live = start_server(env={"DATABASE_URL": url})
    with DDPClient(live.ws_url) as client:
        client.connect()
        client.call("login_as", "refused")
        with pytest.raises(MeteorError) as info:
            client.subscribe("LabelledDocs", "x")
        assert info.value.error == 500
    assert "'testapp_doclabel'" in live.output() and "grant this role TRIGGER on it" in live.output()
    # with the TRIGGER privilege (still not the owner) the node installs them itself
    sql(f"GRANT TRIGGER ON testapp_doclabel TO {role}")
    with DDPClient(live.ws_url) as client:
        client.connect()
        client.call("login_as", "refused")
        client.subscribe("LabelledDocs", "x")
    def triggers():
        return sql("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'testapp_doclabel'::regclass "
                   "AND tgname LIKE 'ddpctl_capture_%%'", fetch=True)[0][0]

    assert triggers() == 4
    # migrate keeps what a serving node installed (a live publication may read the table)
    ddpctl("migrate", "--noinput")
    assert triggers() == 4


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("key_type", "value", "text"), [
    ("timestamptz", "2021-01-01 00:00:00+00", "2021-01-01 00:00:00+00"),
    ("timestamp", "2021-01-02 03:04:05.5", "2021-01-02 03:04:05.5"),
    ("date", "2021-01-02", "2021-01-02"),
    ("float8", "123456789.123456789", "123456789.12345679"),
    ("interval", "1 day 02:00:00", "1 day 02:00:00"),
    ("bytea", "\\x00ff", "\\x00ff"),
])
def test_a_keys_text_does_not_depend_on_the_writers_session_settings(key_type, value, text):
    """A key is recorded as the observer reads it back, whatever TimeZone, DateStyle,
    IntervalStyle, extra_float_digits or bytea_output the writer's session uses."""
    table = f"ddpctl_key_{key_type}"
    with connection.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (k {key_type} PRIMARY KEY, v int)")
        try:
            capture._create(cur, capture.Target(table, ("k",)))
            cur.execute("SELECT coalesce(max(id), 0) FROM ddpctl_change")
            start = cur.fetchone()[0]
            cur.execute("SET TimeZone = 'America/New_York'; SET DateStyle = 'SQL, DMY'; "
                        "SET IntervalStyle = 'sql_standard'; SET extra_float_digits = -3; "
                        "SET bytea_output = 'escape'")
            try:
                cur.execute(f"INSERT INTO {table} VALUES (%s, 1)", [value])
                cur.execute(f"UPDATE {table} SET v = 2")
                cur.execute(f"DELETE FROM {table}")
            finally:
                cur.execute("RESET TimeZone; RESET DateStyle; RESET IntervalStyle; RESET extra_float_digits; "
                            "RESET bytea_output")
            cur.execute('SELECT op, "row" FROM ddpctl_change WHERE id > %s AND "table" = %s ORDER BY id',
                        [start, table])
            rows = cur.fetchall()
        finally:
            cur.execute(f"DROP TABLE {table}")
    assert rows == [("I", text), ("U", text), ("D", text)]
