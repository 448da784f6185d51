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
