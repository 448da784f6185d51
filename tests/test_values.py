"""The one conversion to DDP values (``ddpctl.values``) and EJSON equality, property-based."""
import copy
import datetime
import decimal
import ipaddress
import math
import uuid
import zoneinfo

import pytest
from django.db.backends.postgresql.psycopg_any import DateRange, DateTimeTZRange, NumericRange
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpctl.ddp.ejson import equals
from ddpctl.ddp.mergebox import SessionView
from ddpctl.ddp.messages import parse, stringify
from ddpctl.livedata.observer import diff_fields
from ddpctl.values import to_ddp_value

ZONES = st.sampled_from([None, datetime.UTC, datetime.timezone(-datetime.timedelta(hours=13)),
                         *map(zoneinfo.ZoneInfo, ["Europe/Paris", "America/St_Johns"])])
DATETIMES = st.builds(lambda dt, tz: dt.replace(tzinfo=tz),
                      st.datetimes(datetime.datetime(1, 1, 2), datetime.datetime(9999, 12, 30)), ZONES)
DECIMALS = st.decimals(allow_nan=True, allow_infinity=True) | st.decimals(places=10, allow_nan=False)
SCALARS = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text() | DECIMALS | st.uuids()
    | st.dates() | DATETIMES | st.times() | st.timedeltas() | st.binary()
    | st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))
    | st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1))
    | st.builds(NumericRange, st.none() | st.integers(), st.none() | st.integers(),
                st.sampled_from(["[)", "(]", "[]", "()"]))
    | st.builds(NumericRange, st.none() | st.decimals(allow_nan=False, allow_infinity=False),
                st.none() | st.decimals(allow_nan=False, allow_infinity=False))
    | st.builds(DateRange, st.none() | st.dates(), st.none() | st.dates())
    | st.builds(DateTimeTZRange, st.none() | DATETIMES, st.none() | DATETIMES)
    | st.just(NumericRange(empty=True))
)
HASHABLE = (st.none() | st.integers() | st.text() | st.uuids() | st.dates()
            | DECIMALS.filter(lambda d: not d.is_nan()))
VALUES = st.recursive(
    SCALARS,
    lambda inner: (st.lists(inner, max_size=4) | st.lists(inner, max_size=4).map(tuple)
                   | st.frozensets(HASHABLE, max_size=4) | st.sets(st.integers() | st.text(), max_size=4)
                   | st.dictionaries(st.text(), inner, max_size=4)
                   | st.dictionaries(st.sampled_from(["$date", "$binary", "$escape", "$type", "$value",
                                                      "$InfNaN", "$regexp", "$flags"]), inner, max_size=2)),
    max_leaves=12,
)


def wire_round_trip(value):
    return parse(stringify({"msg": "result", "id": "1", "result": value}))["result"]


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_converted_values_survive_the_wire(value):
    converted = to_ddp_value(value)
    assert equals(wire_round_trip(converted), converted)
    assert equals(to_ddp_value(converted), converted)  # converting twice changes nothing


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_equal_inputs_never_produce_a_change(value):
    first, second = to_ddp_value(value), to_ddp_value(copy.deepcopy(value))
    assert equals(first, second) and equals(second, first)
    assert diff_fields({"f": first}, {"f": second}) == ({}, [])
    view = SessionView()
    view.added("s", "c", "d", {"f": first})
    assert view.changed("s", "c", "d", {"f": second}) == []
    # ...and what the client parses back compares equal too
    assert diff_fields({"f": wire_round_trip(first)}, {"f": second}) == ({}, [])


@given(st.lists(st.integers() | st.text(), max_size=6, unique=True))
def test_a_set_is_sent_in_one_order(items):
    assert to_ddp_value(set(items)) == to_ddp_value(set(reversed(items)))
    assert to_ddp_value(frozenset(items)) == to_ddp_value(set(items))


@pytest.mark.parametrize(("a", "b", "equal"), [
    (math.nan, math.nan, True),
    (-0.0, 0.0, True),
    (1, 1.0, True),
    (True, 1, False),
    (False, 0, False),
    (None, 0, False),
    ("1", 1, False),
    ({"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}, True),
    ([1, 2], [2, 1], False),
    ([1], (1,), True),
    ({"a": 1}, {"a": 1, "b": None}, False),
    (datetime.datetime(2020, 1, 1, 0, 0, 0, 1000, tzinfo=datetime.UTC),
     datetime.datetime(2020, 1, 1, 0, 0, 0, 1999, tzinfo=datetime.UTC), True),  # one millisecond
    (datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
     datetime.datetime(2020, 1, 1, 1, tzinfo=datetime.UTC), False),
    (datetime.datetime(2020, 1, 1, 1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
     datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC), True),  # the same instant
    (b"ab", bytearray(b"ab"), True),
    (b"ab", b"ba", False),
    (datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC), {"$date": 0}, False),  # a plain object
    (math.inf, {"$InfNaN": 1}, False),
])
def test_ejson_equals_is_meteors(a, b, equal):
    assert equals(a, b) is equal and equals(b, a) is equal


@pytest.mark.parametrize(("value", "expected"), [
    (decimal.Decimal("1.50"), "1.50"),
    (decimal.Decimal("-1E-10"), "-0.0000000001"),
    (decimal.Decimal("1E+3"), "1000"),
    (decimal.Decimal("-Infinity"), "-Infinity"),
    (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
    (datetime.date(2020, 2, 29), datetime.datetime(2020, 2, 29, tzinfo=datetime.UTC)),
    (datetime.time(1, 2, 3, 4), "01:02:03.000004"),
    (datetime.timedelta(days=-1, microseconds=1), -86399.999999),
    (memoryview(b"ab"), b"ab"),
    (ipaddress.ip_interface("10.1.2.3/8"), "10.1.2.3/8"),
    (NumericRange(None, 5, "(]"), {"lower": None, "upper": 5, "bounds": "(]", "empty": False}),
    (NumericRange(empty=True), {"lower": None, "upper": None, "bounds": None, "empty": True}),
    ({1: {2, 1}, uuid.UUID(int=2): (None,)}, {"1": [1, 2], "00000000-0000-0000-0000-000000000002": [None]}),
])
def test_documented_mapping(value, expected):
    converted = to_ddp_value(value)
    assert converted == expected and type(converted) is type(expected)


def test_naive_datetimes_are_read_in_the_default_time_zone(settings):
    settings.TIME_ZONE = "Europe/Paris"
    converted = to_ddp_value(datetime.datetime(2020, 7, 1, 12))
    assert converted == datetime.datetime(2020, 7, 1, 10, tzinfo=datetime.UTC)


@pytest.mark.parametrize(("value", "message"), [
    (object(), "v: builtins.object is not a DDP value"),
    ({"a": [1, {"b": object()}]}, "v['a'][1]['b']: builtins.object is not a DDP value"),
    ((i for i in ()), "v: builtins.generator is not a DDP value"),
    ({(1, 2): 3}, "v[(1, 2)]: builtins.tuple is not a DDP value"),
])
def test_unknown_types_are_named_with_their_place(value, message):
    with pytest.raises(TypeError) as caught:
        to_ddp_value(value, "v")
    assert str(caught.value) == message
