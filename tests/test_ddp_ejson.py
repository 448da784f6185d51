import datetime
import math
import re

import pytest

from ddpctl.ddp.ejson import EJSONError, ObjectID, RegExp, from_json_value, to_json_value

UTC = datetime.UTC


@pytest.mark.parametrize("value, wire", [
    (datetime.datetime(1970, 1, 1, 0, 0, 32, 491000, tzinfo=UTC), {"$date": 32491}),
    (b"\x00\x01hello", {"$binary": "AAFoZWxsbw=="}),
    (math.inf, {"$InfNaN": 1}),
    (-math.inf, {"$InfNaN": -1}),
    (RegExp("^a.*b$", "gi"), {"$regexp": "^a.*b$", "$flags": "gi"}),
    (ObjectID("0123456789abcdef01234567"), {"$type": "oid", "$value": "0123456789abcdef01234567"}),
    ({"$date": 5}, {"$escape": {"$date": 5}}),
    ({"$type": "x", "$value": 1}, {"$escape": {"$type": "x", "$value": 1}}),
    ({"a": [1, "two", None, True, 2.5]}, {"a": [1, "two", None, True, 2.5]}),
])
def test_round_trip(value, wire):
    assert to_json_value(value) == wire
    assert from_json_value(wire) == value


def test_nan():
    assert to_json_value(math.nan) == {"$InfNaN": 0}
    assert math.isnan(from_json_value({"$InfNaN": 0}))


def test_escape_is_one_level_and_inner_values_are_ejson():
    decoded = from_json_value({"$escape": {"$date": {"$date": 32491}}})
    assert decoded == {"$date": datetime.datetime(1970, 1, 1, 0, 0, 32, 491000, tzinfo=UTC)}


def test_naive_datetime_is_utc_and_date_is_midnight():
    assert to_json_value(datetime.datetime(2020, 1, 2, 3, 4, 5)) == {"$date": 1577934245000}
    assert to_json_value(datetime.date(2020, 1, 2)) == {"$date": 1577923200000}


def test_python_regex_becomes_js_regexp():
    assert to_json_value(re.compile("ab+", re.I)) == {"$regexp": "ab+", "$flags": "i"}


def test_regexp_flags_are_cleaned_like_meteor():
    assert from_json_value({"$regexp": "x", "$flags": "ggzim"}) == RegExp("x", "gim")


def test_key_order_is_preserved():
    assert list(from_json_value({"b": 1, "a": {"$date": 0}, "c": 3})) == ["b", "a", "c"]


def test_objects_with_more_keys_are_plain():
    assert from_json_value({"$date": 1, "other": 2}) == {"$date": 1, "other": 2}


@pytest.mark.parametrize("bad", [
    {"$type": "nope", "$value": 1},
    {"$binary": "!!notbase64"},
    {"$date": "yesterday"},
    {"$type": "oid", "$value": "xyz"},
])
def test_invalid_ejson_raises(bad):
    with pytest.raises(EJSONError):
        from_json_value({"nested": [bad]})


def test_unknown_python_type_is_a_type_error():
    with pytest.raises(TypeError):
        to_json_value(object())


# -- every value: round trips, bounded nesting, no stray exception ------------------------

import json  # noqa: E402
from fractions import Fraction  # noqa: E402

from ejson_strategies import date_ms, values, wire_values  # noqa: E402
from hypothesis import example, given  # noqa: E402

from ddpctl.ddp.ejson import MAX_DEPTH, JSDate  # noqa: E402
from ddpctl.ddp.messages import EncodeError, parse, stringify  # noqa: E402


@given(values)
def test_every_value_round_trips_through_a_ddp_message(value):
    text = stringify({"msg": "result", "id": "1", "result": value})
    text.encode("utf-8")  # always sendable, even with lone surrogates
    assert parse(text)["result"] == value


@given(wire_values)
def test_every_wire_value_decodes_to_a_value_that_encodes_back_or_is_an_ejson_error(wire):
    try:
        value = from_json_value(wire)
    except EJSONError:
        return
    again = to_json_value(value)
    assert to_json_value(from_json_value(json.loads(json.dumps(again)))) == again


@given(date_ms)
@example(253402300800000)  # +010000-01-01: valid in JavaScript, not in Python
def test_every_javascript_date_round_trips(ms):
    value = from_json_value({"$date": ms})
    assert to_json_value(value) == {"$date": ms}
    assert from_json_value(to_json_value(value)) == value


@pytest.mark.parametrize("ms, expected", [
    (253402300800000, JSDate(253402300800000)),  # +010000-01-01, valid in JavaScript
    (253402300799999, datetime.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
    (-62135596800001, JSDate(-62135596800001)),  # just before 0001-01-01
    (-8.64e15, JSDate(-8_640_000_000_000_000)),
    (1.9, datetime.datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC)),  # TimeClip truncates
    (-1.9, datetime.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
])
def test_dates_beyond_python_are_kept_as_jsdate(ms, expected):
    assert from_json_value({"$date": ms}) == expected
    assert to_json_value(expected) == {"$date": int(ms)}


@pytest.mark.parametrize("bad", [8.64e15 + 1, -8.64e15 - 1, 10 ** 400, True, None, [1]])
def test_dates_beyond_javascript_are_ejson_errors(bad):
    with pytest.raises(EJSONError):
        from_json_value({"$date": bad})


@pytest.mark.parametrize("bad", [
    {"$type": "fraction", "$value": [1, 0]},  # ZeroDivisionError in the decoder
    {"$type": "fraction", "$value": []},  # IndexError
    {"$type": "fraction", "$value": {"a": 1}},  # KeyError
    {"$type": ["not", "a", "name"], "$value": 1},  # unhashable type name
    {"$type": "oid", "$value": {"$date": 5}},
    {"$binary": "é"},
    {"$escape": 5},
])
def test_any_decoder_failure_is_an_ejson_error(bad):
    with pytest.raises(EJSONError):
        from_json_value([bad])


def test_custom_type_round_trips():
    assert from_json_value(to_json_value([Fraction(1, 3)])) == [Fraction(1, 3)]


def test_a_failing_custom_encoder_is_a_type_error():
    class Broken(Fraction):
        pass

    from ddpctl.ddp.ejson import add_type

    add_type("broken", Broken, lambda b: 1 / 0, Broken)
    with pytest.raises(TypeError):
        to_json_value([Broken(1)])
    with pytest.raises(EncodeError):
        stringify({"msg": "result", "id": "1", "result": Broken(1)})


def test_nesting_is_bounded_without_recursion_error():
    ok = [[]]
    for _ in range(MAX_DEPTH - 2):
        ok = [ok]
    assert from_json_value(ok) == ok
    with pytest.raises(EJSONError):
        from_json_value([ok])
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ValueError):  # ParseError, not RecursionError
        parse('{"msg":"method","params":' + deep + "}")
    with pytest.raises(ValueError):
        parse('{"msg":"method","id":' + deep + "}")


@pytest.mark.parametrize("number, decoded", [
    ("1e400", math.inf), ("-1e400", -math.inf), ("9" * 5000, math.inf), ("1" * 400, int("1" * 400)),
])
def test_numbers_parse_like_javascript(number, decoded):
    msg = parse('{"msg":"method","params":[' + number + '],"id":' + number + "}")
    assert msg["params"] == [decoded]
    text = stringify({"msg": "error", "reason": "Bad request", "offendingMessage": msg})
    wire = json.loads(text)["offendingMessage"]
    assert wire["params"] == [to_json_value(decoded)]  # EJSON: {"$InfNaN": 1} for infinity
    assert wire["id"] == (None if isinstance(decoded, float) else decoded)  # plain JSON: JSON.stringify


def test_nan_and_infinity_literals_are_not_json():
    assert parse('{"msg":"method","params":[NaN]}') is None
    assert parse('{"msg":"method","params":[Infinity]}') is None


def test_lone_surrogates_are_escaped_on_the_wire():
    msg = parse('{"msg":"method","params":["\\ud800x"],"id":"\\udfff"}')
    text = stringify({"msg": "error", "reason": "Bad request", "offendingMessage": msg})
    assert json.loads(text.encode("utf-8"))["offendingMessage"] == {
        "msg": "method", "params": ["\ud800x"], "id": "\udfff"}
