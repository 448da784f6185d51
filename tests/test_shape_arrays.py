"""A multiplexed statement sends each parameter's cohort values as one array literal
(``ddpctl.livedata.shape._array_element``): PostgreSQL must read every value exactly as it
reads psycopg2's literal of it, cast to the parameter's type -- as the cursor's own
statement would have."""
import datetime
import uuid
from decimal import Decimal

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddpctl.livedata.shape import _array_element

texts = st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=30)
zones = [datetime.UTC, datetime.timezone(datetime.timedelta(hours=5, minutes=30)),
         datetime.timezone(-datetime.timedelta(hours=8))]
aware = st.datetimes(timezones=st.sampled_from(zones))
days = datetime.timedelta(days=10**6)
CASES = [
    ("text", texts),
    ("character varying", texts),
    ("bigint", st.integers(-2**63, 2**63 - 1)),
    ("integer", st.integers(-2**31, 2**31 - 1)),
    ("numeric", st.decimals(allow_nan=False, allow_infinity=False, places=6)),
    ("double precision", st.floats(allow_nan=True, allow_infinity=True)),
    ("boolean", st.booleans()),
    ("uuid", st.uuids()),
    ("date", st.dates()),
    ("timestamp with time zone", aware),
    ("timestamp without time zone", st.datetimes()),
    ("time without time zone", st.times()),
    ("interval", st.timedeltas(min_value=-days, max_value=days)),
    ("bytea", st.binary(max_size=20)),
]


@pytest.fixture(scope="module")
def pg(live_database_url):
    conn = psycopg2.connect(live_database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET TimeZone = 'UTC'")
    yield conn
    conn.close()


@pytest.mark.parametrize("cast,values", CASES, ids=[c for c, _ in CASES])
def test_an_array_element_reads_as_the_literal_would(pg, cast, values):
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(st.one_of(st.none(), values), min_size=1, max_size=5))
    def check(items):
        literal = "{" + ",".join(map(_array_element, items)) + "}"
        with pg.cursor() as cur:
            cur.execute(f"SELECT (%s::{cast}[])::text[]", [literal])
            from_array = cur.fetchone()[0]
            cur.execute("SELECT ARRAY[" + ", ".join([f"(%s)::{cast}"] * len(items)) + "]::text[]", items)
            from_literals = cur.fetchone()[0]
        assert from_array == from_literals

    check()


@pytest.mark.parametrize("cast", ["double precision", "real", "numeric"])
def test_negative_zero_reads_as_the_literal_would(pg, cast):
    """psycopg2's literal of -0.0 is `` -0.0``, a unary minus on a numeric zero: +0."""
    with pg.cursor() as cur:
        cur.execute(f"SELECT (%s::{cast}[])::text[], ARRAY[(%s)::{cast}]::text[]",
                    ["{" + _array_element(-0.0) + "}", -0.0])
        from_array, from_literal = cur.fetchone()
    assert from_array == from_literal


def test_values_without_a_text_form_are_refused():
    for value in ([1, 2], {"a": 1}, object(), "nul\x00inside"):
        with pytest.raises(TypeError):
            _array_element(value)
    assert _array_element(Decimal("1.50")) == '"1.50"'
    assert _array_element(uuid.UUID(int=1)).startswith('"0000')
