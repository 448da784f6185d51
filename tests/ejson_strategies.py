"""Hypothesis strategies for EJSON: Python values that must round-trip, wire values a client
might send (valid or not), and DDP frames built from them (valid, mutated, broken)."""
from __future__ import annotations

import base64
import json
from fractions import Fraction

from hypothesis import strategies as st

from ddpctl.ddp.ejson import JS_DATE_LIMIT, ObjectID, RegExp, add_type, from_json_value

# A custom type whose decoder raises whatever its input provokes (TypeError, IndexError,
# ZeroDivisionError, ...).  tests/testapp/ddp.py registers the same one in the server.
add_type("fraction", Fraction, lambda f: [f.numerator, f.denominator], lambda v: Fraction(v[0], v[1]))

SPECIAL_KEYS = ["$date", "$binary", "$escape", "$InfNaN", "$type", "$value", "$regexp", "$flags"]
# Strings with lone surrogates (JSON "\ud800" is legal and JavaScript keeps it).
texts = st.text(alphabet=st.characters(exclude_categories=()), max_size=12)
keys = st.one_of(texts, st.sampled_from(SPECIAL_KEYS))
date_ms = st.one_of(
    st.integers(-JS_DATE_LIMIT, JS_DATE_LIMIT),
    st.sampled_from([-JS_DATE_LIMIT, JS_DATE_LIMIT, 253402300800000, 253402300799999,
                     -62135596800000, -62135596800001, 0, -1]),
)
dates = date_ms.map(lambda ms: from_json_value({"$date": ms}))  # datetime or JSDate

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10 ** 400), max_value=10 ** 400),
    st.floats(allow_nan=False), texts, st.binary(max_size=16), dates,
    st.builds(RegExp, texts, st.sampled_from(["", "g", "gi", "imuy"])),
    st.from_regex(r"[0-9a-f]{24}", fullmatch=True).map(ObjectID),
    st.fractions(max_denominator=10 ** 6),
)

# Python values that encode, travel and decode back equal (no NaN: NaN != NaN).
values = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)), max_leaves=16)


def _json_scalars():
    return st.one_of(st.none(), st.booleans(), st.integers(),
                     st.floats(allow_nan=False, allow_infinity=False), texts)


def _specials(children):
    """Objects shaped like EJSON types, with good or bad contents."""
    return st.one_of(
        st.fixed_dictionaries({"$date": st.one_of(
            date_ms, children, st.floats(allow_nan=False, allow_infinity=False))}),
        st.fixed_dictionaries({"$binary": st.one_of(
            st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode()), texts, children)}),
        st.fixed_dictionaries({"$InfNaN": st.one_of(st.sampled_from([-1, 0, 1]), children)}),
        st.fixed_dictionaries({"$escape": children}),
        st.fixed_dictionaries({"$type": st.one_of(st.sampled_from(["oid", "fraction", "nope"]), children),
                               "$value": children}),
        st.fixed_dictionaries({"$regexp": st.one_of(texts, children), "$flags": st.one_of(texts, children)}),
    )


# JSON values as a client may send them: anything, including EJSON lookalikes.
wire_values = st.recursive(_json_scalars(), lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4), _specials(children)),
    max_leaves=16)

_json = json.JSONEncoder(allow_nan=False, ensure_ascii=False)


def dumps(value) -> str:
    return _json.encode(value)


_ids = st.one_of(texts, _json_scalars(), wire_values)
_messages = st.one_of(
    st.fixed_dictionaries({"msg": st.just("method"), "method": st.sampled_from(["echo", "nope"]),
                           "id": texts, "params": st.lists(wire_values, max_size=3)},
                          optional={"randomSeed": _ids}),
    st.fixed_dictionaries({"msg": st.just("sub"), "id": _ids,
                           "name": st.sampled_from(["echo_params", "nope"]),
                           "params": st.one_of(st.just([]), st.lists(wire_values, max_size=2), wire_values)}),
    st.fixed_dictionaries({"msg": st.just("unsub")}, optional={"id": _ids}),
    st.fixed_dictionaries({"msg": st.just("ping")}, optional={"id": _ids}),
    st.fixed_dictionaries({"msg": st.sampled_from(["pong", "connect", "added", "result", "", "x"])},
                          optional={"id": _ids, "fields": wire_values, "result": wire_values}),
    st.dictionaries(keys, wire_values, max_size=4),
)


def _deep(depth: int, kind: str) -> str:
    return "[" * depth + "]" * depth if kind == "array" else '{"a":' * depth + "1" + "}" * depth


frames = st.one_of(
    _messages.map(dumps),
    # truncated
    _messages.map(dumps).flatmap(lambda t: st.integers(0, max(len(t) - 1, 0)).map(lambda n: t[:n])),
    wire_values.map(dumps),  # not an object, or an object without msg
    texts,
    st.builds(lambda d, k: '{"msg":"method","method":"echo","id":"d","params":[' + _deep(d, k) + "]}",
              st.integers(1, 3000), st.sampled_from(["array", "object"])),
    st.builds(lambda n: '{"msg":"method","method":"echo","id":"n","params":[' + n + "]}",
              st.sampled_from(["1e400", "-1e400", "9" * 5000, "NaN", "Infinity", "1" * 400, "-0", "1E-400"])),
)
