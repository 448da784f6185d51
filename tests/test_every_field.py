"""Every Django and ``django.contrib.postgres`` field, published and returned by a method.

A real ``ddpctl serve`` and PostgreSQL: rows with edge values are written with SQL, the
client's ``added`` must hold the documented EJSON (README.rst, "Document ids and values")
and equal the method result for the same row; live updates send exactly the changed field;
a value with no DDP mapping ends the subscription cleanly and never leaves the client with
``changed``/``removed`` for a document it does not hold.  Expected values are written out
as wire JSON here, independently of the conversion code.
"""
import base64
import datetime
import json
import math
import uuid

import psycopg2
import pytest

from ddpctl.ddp.ejson import to_json_value
from ddpctl.testing import DDPClient

COLLECTION = "testapp.everything"
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
U1 = uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
U2 = uuid.UUID("00000000-0000-0000-0000-000000000001")


def date_ms(text):
    """``{"$date": ms}`` for an ISO datetime (or date, taken at 00:00 UTC)."""
    value = datetime.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return {"$date": (value - EPOCH) // datetime.timedelta(milliseconds=1)}


# column -> (SQL text written, EJSON wire value the client must receive)
EDGE = {
    "big": (9223372036854775807, 9223372036854775807),
    "small": (-32768, -32768),
    "integer": (1073741823, 1073741823),  # doubled by a generated column
    "positive": (0, 0),
    "positive_big": (9223372036854775807, 9223372036854775807),
    "positive_small": (32767, 32767),
    "flag": (True, True),
    "char": ('héllo 🌍 "q" \\ \u2028', 'héllo 🌍 "q" \\ \u2028'),
    "text": ("x" * 5000 + "ü", "x" * 5000 + "ü"),
    "slug": ("a-slug", "a-slug"),
    "email": ("a@example.com", "a@example.com"),
    "url": ("https://example.com/?q=1", "https://example.com/?q=1"),
    "kind": ("ebook", "ebook"),
    "level": (2, 2),
    "real": ("NaN", {"$InfNaN": 0}),
    "amount": ("99999999999999999999.9999999999", "99999999999999999999.9999999999"),
    "day": ("1969-12-31", date_ms("1969-12-31")),
    "moment": ("2021-03-04 05:06:07.123456+02", date_ms("2021-03-04T05:06:07.123456+02:00")),
    "clock": ("23:59:59.999999", "23:59:59.999999"),
    "span": ("-1 days +00:00:05.000007",
             datetime.timedelta(days=-1, seconds=5, microseconds=7).total_seconds()),
    "blob": (psycopg2.Binary(bytes(range(256))), {"$binary": base64.b64encode(bytes(range(256))).decode()}),
    "uid": (str(U1), str(U1)),
    "ip": ("2001:db8::1", "2001:db8::1"),
    "file": ("uploads/a b.txt", "uploads/a b.txt"),
    "path": ("/tmp/x", "/tmp/x"),
    "data": (json.dumps({"nested": {"list": [1, 2.5, None, True, "s"], "deep": {"decimal": "1.50"}},
                         "esc": {"$date": 5}, "empty": {}, "none": [], "big": 12345678901234567890}),
             {"nested": {"list": [1, 2.5, None, True, "s"], "deep": "1.50"},
              "esc": {"$escape": {"$date": 5}}, "empty": {}, "none": [], "big": 12345678901234567890}),
    "prices": ("{1.5,0,9999999999.99,NaN}", ["1.50", "0.00", "9999999999.99", "NaN"]),
    "moments": ('{"2021-03-04 05:06:07.123456+02","1900-01-01 00:00:00+00"}',
                [date_ms("2021-03-04T05:06:07.123+02:00"), date_ms("1900-01-01T00:00:00+00:00")]),
    "uids": (f"{{{U1},{U2}}}", [str(U1), str(U2)]),
    "grid": ("{{1,2},{3,4}}", [[1, 2], [3, 4]]),
    "reals": ("{Infinity,-Infinity,-0,NULL,1e308}", [{"$InfNaN": 1}, {"$InfNaN": -1}, -0.0, None, 1e308]),
    "ips": ("{10.0.0.1,::1}", ["10.0.0.1", "::1"]),
    "spans": ("{00:00:00,01:00:00}", [0.0, 3600.0]),
    "tags": ('"a"=>"1", "b"=>NULL, "$date"=>"x"', {"a": "1", "b": None, "$date": "x"}),
    "int_range": ("[1,10)", {"lower": 1, "upper": 10, "bounds": "[)", "empty": False}),
    "big_range": ("(,5]", {"lower": None, "upper": 6, "bounds": "()", "empty": False}),
    "decimal_range": ("empty", {"lower": None, "upper": None, "bounds": None, "empty": True}),
    "moment_range": ("[2020-01-01 00:00:00.5+00,)",
                     {"lower": date_ms("2020-01-01T00:00:00.5+00:00"), "upper": None, "bounds": "[)",
                      "empty": False}),
    "day_range": ("[2020-01-01,2020-02-01)",
                  {"lower": date_ms("2020-01-01"), "upper": date_ms("2020-02-01"), "bounds": "[)",
                   "empty": False}),
}
DERIVED = {"doubled": 2147483646, "parent_id": None}  # generated from `integer`; no foreign row
# column -> (new SQL text, wire value) for the live updates, one column at a time
UPDATES = {
    "big": (-1, -1), "small": (7, 7), "positive": (1, 1), "positive_big": (2, 2), "positive_small": (3, 3),
    "flag": (False, False), "char": ("", ""), "text": ("ñ", "ñ"), "slug": ("b", "b"),
    "email": ("b@c.d", "b@c.d"), "url": ("http://x", "http://x"), "kind": ("paper", "paper"), "level": (1, 1),
    "real": ("-Infinity", {"$InfNaN": -1}), "amount": ("-0.0000000001", "-0.0000000001"),
    "day": ("2024-02-29", date_ms("2024-02-29")),
    "moment": ("2000-01-01 00:00:00.000999+00", date_ms("2000-01-01")),
    "clock": ("00:00", "00:00:00"), "span": ("00:00:00.000001", 1e-06),
    "blob": (psycopg2.Binary(b""), {"$binary": ""}), "uid": (str(U2), str(U2)),
    "ip": ("127.0.0.1", "127.0.0.1"),
    "file": ("", None), "path": ("/tmp/y", "/tmp/y"), "data": ("[1, [2]]", [1, [2]]),
    "prices": ("{}", []), "moments": ("{}", []), "uids": (f"{{{U2}}}", [str(U2)]), "grid": ("{}", []),
    "reals": ("{NaN}", [{"$InfNaN": 0}]), "ips": ("{}", []), "spans": ("{1 day}", [86400.0]),
    "tags": ("", {}), "int_range": ("empty", {"lower": None, "upper": None, "bounds": None, "empty": True}),
    "big_range": ("[1,)", {"lower": 1, "upper": None, "bounds": "[)", "empty": False}),
    "decimal_range": ("[0.5,1.25]", {"lower": "0.5", "upper": "1.25", "bounds": "[]", "empty": False}),
    "moment_range": ("(,)", {"lower": None, "upper": None, "bounds": "()", "empty": False}),
    "day_range": ("empty", {"lower": None, "upper": None, "bounds": None, "empty": True}),
}


@pytest.fixture
def every(start_server, sql):
    sql("TRUNCATE testapp_everything RESTART IDENTITY CASCADE")
    return start_server()


@pytest.fixture
def has_hstore(sql):
    (udt,), = sql("SELECT udt_name FROM information_schema.columns "
                  "WHERE table_name = 'testapp_everything' AND column_name = 'tags'", fetch=True)
    return udt == "hstore"


def insert(sql, values):
    columns = ", ".join(f'"{c}"' for c in values)
    placeholders = ", ".join(["%s"] * len(values))
    return sql(f"INSERT INTO testapp_everything ({columns}) VALUES ({placeholders}) RETURNING id",
               list(values.values()), fetch=True)[0][0]


def edge_values(has_hstore):
    return {c: v for c, v in EDGE.items() if has_hstore or c != "tags"}


def call_raw(client, method, *params):
    """Call a method; ``(wire result or error, data messages that arrived meanwhile)``.  The
    server's write fence sends the data of every write committed before the call first."""
    method_id = client.new_id()
    client.send({"msg": "method", "method": method, "id": method_id, "params": list(params)})
    data, result, updated = [], None, False
    while result is None or not updated:
        msg = client.recv()
        if msg.get("msg") == "result" and msg["id"] == method_id:
            result = msg
        elif msg.get("msg") == "updated" and method_id in msg["methods"]:
            updated = True
        elif msg.get("msg") in ("added", "changed", "removed", "nosub"):
            data.append(msg)
    return result.get("error", result.get("result")), data


def subscribe_raw(client, name):
    """Subscribe; ``(ready?, messages until ready or nosub)``."""
    sub_id = client.new_id()
    client.send({"msg": "sub", "id": sub_id, "name": name, "params": []})
    seen = []
    while True:
        msg = client.recv()
        seen.append(msg)
        if msg.get("msg") == "ready" and sub_id in msg["subs"]:
            return True, seen
        if msg.get("msg") == "nosub" and msg["id"] == sub_id:
            return False, seen


def canonical(value):
    """Wire JSON as comparable text: key order ignored, ``-0.0`` kept apart from ``0``."""
    return json.dumps(value, sort_keys=True)


def test_every_field_is_published_and_returned_as_documented(every, sql, has_hstore):
    values = edge_values(has_hstore)
    edge = insert(sql, {c: sql_value for c, (sql_value, _) in values.items()})
    empty = insert(sql, {"flag": None})
    with DDPClient(every.ws_url) as client:
        client.connect()
        ready, messages = subscribe_raw(client, "AllEverything")
        assert ready
        added = {m["id"]: m.get("fields", {}) for m in messages if m["msg"] == "added"}
        expected = {c: wire for c, (_, wire) in values.items()} | DERIVED
        fields = {c: v for c, v in added[str(edge)].items() if has_hstore or c != "tags"}
        assert canonical(fields) == canonical(expected)
        assert math.copysign(1, fields["reals"][2]) == -1  # negative zero stays negative
        # every field of an all-NULL row is null (a field name is never missing)
        assert set(added[str(empty)]) == set(fields) | ({"tags"} if not has_hstore else set())
        assert all(v is None for v in added[str(empty)].values())
        # the method result for the same rows is the same EJSON
        for pk in (edge, empty):
            result, _ = call_raw(client, "everything", pk)
            assert canonical(result) == canonical(added[str(pk)])
        # a row inserted live arrives whole
        live = insert(sql, {c: sql_value for c, (sql_value, _) in values.items()})
        _, data = call_raw(client, "pid")
        assert [(m["msg"], m["id"]) for m in data] == [("added", str(live))]
        assert canonical(data[0]["fields"]) == canonical(added[str(edge)])


def test_live_update_sends_exactly_the_changed_field(every, sql, has_hstore):
    values = edge_values(has_hstore)
    row = insert(sql, {c: sql_value for c, (sql_value, _) in values.items()})
    with DDPClient(every.ws_url) as client:
        client.connect()
        client.subscribe("AllEverything")
        # NaN, infinities and nested JSON left as they are: no `changed` for them
        sql("UPDATE testapp_everything SET integer = 1 WHERE id = %s", [row])
        _, data = call_raw(client, "pid")
        assert data == [{"msg": "changed", "collection": COLLECTION, "id": str(row),
                         "fields": {"integer": 1, "doubled": 2}}]
        for column, (sql_value, wire) in UPDATES.items():
            if column == "tags" and not has_hstore:
                continue
            sql(f'UPDATE testapp_everything SET "{column}" = %s WHERE id = %s', [sql_value, row])
            _, data = call_raw(client, "pid")
            assert [(m["msg"], m["id"], set(m.get("fields", {})), m.get("cleared")) for m in data] == \
                [("changed", str(row), {column}, None)], column
            assert canonical(data[0]["fields"][column]) == canonical(wire), column
        # every other field written with the value it has (NaN and infinities included)
        assignments = ", ".join(f'"{c}" = "{c}"' for c in UPDATES if c != "text")
        sql(f"UPDATE testapp_everything SET {assignments}, text = 'again' WHERE id = %s", [row])
        _, data = call_raw(client, "pid")
        assert data == [{"msg": "changed", "collection": COLLECTION, "id": str(row),
                         "fields": {"text": "again"}}]
        # the client's copy equals the method's view of the row
        result, _ = call_raw(client, "everything", row)
        assert canonical(to_json_value(client.collections[COLLECTION][str(row)])) == canonical(result)


def test_a_row_that_cannot_be_sent_ends_the_subscription_cleanly(every, sql):
    good = insert(sql, {"integer": 1})
    with DDPClient(every.ws_url) as client:
        client.connect()
        sub_id = client.subscribe("AllEverything")
        assert set(client.collections[COLLECTION]) == {str(good)}
        bad = insert(sql, {"data": json.dumps({"list": [{"opaque": 1}]})})
        _, data = call_raw(client, "pid")
        # the subscription ends with 500 and withdraws what the client holds; nothing about
        # the row that could not be sent (the client applies each message: an unknown id fails)
        assert [(m["msg"], m["id"]) for m in data] == [("removed", str(good)), ("nosub", sub_id)]
        assert data[1]["error"]["error"] == 500
        sql("UPDATE testapp_everything SET integer = 2")
        assert call_raw(client, "pid")[1] == []
        # subscribing while the row is there: nosub 500 before any document is sent
        ready, messages = subscribe_raw(client, "AllEverything")
        assert not ready and [m["msg"] for m in messages] == ["nosub"]
        assert messages[0]["error"]["error"] == 500
        # the server says which value of which field could not be sent
        assert ("testapp.Everything.data['list'][0]: testapp.models.Opaque is not a DDP value"
                in every.output())
        sql("DELETE FROM testapp_everything WHERE id = %s", [bad])
        client.subscribe("AllEverything")
        assert set(client.collections[COLLECTION]) == {str(good)}


def test_a_low_level_publication_never_removes_what_it_could_not_add(every):
    with DDPClient(every.ws_url) as client:
        client.connect()
        ready, messages = subscribe_raw(client, "unsendable")
        assert not ready
        assert [(m["msg"], m.get("id")) for m in messages] == [
            ("added", "good"), ("removed", "good"), ("nosub", messages[-1]["id"])]
        assert messages[-1]["error"]["error"] == 500
        assert client.call("pid")  # the connection lives on
        assert "publication 'unsendable', things 'bad' fields['value']: builtins.object is not a DDP value" \
            in every.output()


@pytest.mark.parametrize(("kind", "wire"), [
    ("decimal", "12345678901234567890.1234567890"),
    ("uuid", "12345678-1234-5678-1234-567812345678"),
    ("set", [1, 2, 3]),
    ("frozenset", ["a", "b"]),
    ("tuple", [1, "a", None]),
    ("nested", {"a": ["1.10", ["00000000-0000-0000-0000-000000000001"]], "7": date_ms("2020-02-29")}),
    ("ip", "2001:db8::1"),
    ("network", "10.0.0.0/8"),
    ("enum", ["ebook", 2]),
    ("lazy", "hello"),
    ("nan", {"$InfNaN": 0}),
    ("time", "13:14:15.000016"),
    ("duration", 86400.000005),
    ("bytes", {"$binary": "AP8="}),
    ("naive", date_ms("2020-01-02T03:04:05.678")),  # TIME_ZONE is UTC in the test settings
])
def test_method_results_use_the_same_mapping(server, kind, wire):
    with DDPClient(server.ws_url) as client:
        client.connect()
        result, _ = call_raw(client, "python_value", kind)
        assert canonical(result) == canonical(wire)


@pytest.mark.parametrize(("kind", "logged"), [
    ("model", "result of method 'python_value': testapp.models.Everything is not a DDP value (send its pk"),
    ("generator", "result of method 'python_value': builtins.generator is not a DDP value"),
    ("object", "result of method 'python_value'['rows'][1]: builtins.object is not a DDP value"),
])
def test_a_method_result_without_mapping_is_a_500_naming_it(server, kind, logged):
    with DDPClient(server.ws_url) as client:
        client.connect()
        error, _ = call_raw(client, "python_value", kind)
        assert error["error"] == 500 and error["reason"] == "Internal server error"
        assert client.call("pid")
    assert logged in server.output()


@pytest.mark.parametrize(("text", "wire"), [
    ('"a"=>"1", "b"=>NULL', {"a": "1", "b": None}),
    ("", {}),
    ('"$date"=>"5"', {"$escape": {"$date": "5"}}),  # one key that looks like EJSON: escaped
    ('"ключ"=>"🌍", "sp ace"=>""', {"ключ": "🌍", "sp ace": ""}),
])
def test_hstore(every, sql, has_hstore, text, wire):
    if not has_hstore:
        pytest.skip("this PostgreSQL server has no hstore extension (testapp_everything.tags is text)")
    row = insert(sql, {"tags": text})
    with DDPClient(every.ws_url) as client:
        client.connect()
        ready, messages = subscribe_raw(client, "AllEverything")
        assert ready and canonical(messages[0]["fields"]["tags"]) == canonical(wire)
        result, _ = call_raw(client, "everything", row)
        assert canonical(result["tags"]) == canonical(wire)
