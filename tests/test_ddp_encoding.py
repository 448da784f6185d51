"""``stringify``'s two encoders: orjson where it applies, the json module otherwise.

For any message -- EJSON values of every kind (NaN and infinities, integers far beyond 64
bits, lone surrogates, custom types, one whose ``to_json`` returns what JSON cannot hold),
envelopes with non-string keys, NaN, nested dicts -- the text ``stringify`` sends parses
to exactly the JSON the json module's text parses to (same types, same float bits, same key
order), and a message one of them cannot encode, neither can the other.
"""
import dataclasses
import enum
import json
import math
import uuid

import pytest
from ejson_strategies import texts, values
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ddpctl.ddp.ejson import add_type
from ddpctl.ddp.messages import EncodeError, _json_text, _wire_form, added_text, parse, stringify


@dataclasses.dataclass(frozen=True)
class Boxed:
    """A custom type whose ``to_json`` returns a value that is not JSON (orjson would write
    a UUID, an Enum or a dataclass as text; the json module refuses it)."""

    inner: object


class Colour(enum.Enum):
    RED = "red"


add_type("boxed", Boxed, lambda box: box.inner, Boxed)

FLOATS = st.floats(allow_nan=True, allow_infinity=True)
ODD = st.one_of(st.uuids(), st.just(Colour.RED), st.builds(Boxed, st.integers()), FLOATS,
                st.integers(min_value=-(2 ** 70), max_value=2 ** 70))
EJSON = st.recursive(st.one_of(values, FLOATS, st.builds(Boxed, st.one_of(ODD, texts, st.integers()))),
                     lambda children: st.one_of(st.lists(children, max_size=3),
                                                st.dictionaries(texts, children, max_size=3)),
                     max_leaves=12)
ENVELOPE_KEYS = st.one_of(texts, st.integers(), st.booleans(), st.none(), FLOATS)
ENVELOPE = st.recursive(st.one_of(st.none(), st.booleans(),
                                  st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
                                  FLOATS, texts, st.lists(texts, max_size=3)),
                        lambda children: st.one_of(st.lists(children, max_size=3),
                                                   st.dictionaries(ENVELOPE_KEYS, children, max_size=3)),
                        max_leaves=8)
MESSAGES = st.fixed_dictionaries(
    {"msg": st.sampled_from(["added", "changed", "removed", "result", "ready", "nosub", "error", "updated"])},
    optional={"collection": texts, "id": st.one_of(texts, st.integers(), st.uuids()),
              "fields": st.dictionaries(texts, EJSON, max_size=4), "cleared": st.lists(texts, max_size=3),
              "result": EJSON,
        "subs": st.lists(texts, max_size=3), "error": ENVELOPE, "reason": ENVELOPE,
        "offendingMessage": st.dictionaries(texts, EJSON, max_size=2)})


def reference(msg):
    """The json module's text, as ``stringify`` wrote every message before orjson."""
    try:
        return _json_text(_wire_form(msg))
    except (TypeError, ValueError, RecursionError) as exc:
        raise EncodeError(str(exc)) from exc


def exact(value):
    """A parsed JSON value with its types spelled out: 1, 1.0 and True differ, and so do
    0.0 and -0.0; objects keep their key order."""
    if isinstance(value, dict):
        return ("object", [(k, exact(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("array", [exact(v) for v in value])
    if isinstance(value, float):
        return ("float", value.hex())
    return (type(value).__name__, value)


def parsed(text):
    return exact(json.loads(text, parse_int=int))


@settings(max_examples=400, deadline=None)
@given(MESSAGES)
@example({"msg": "added", "collection": "c", "id": "1", "fields": {"big": 2 ** 64, "small": -(2 ** 63) - 1}})
@example({"msg": "added", "collection": "c", "id": "1", "fields": {"lone": "a\ud800b", "nan": math.nan}})
@example({"msg": "added", "collection": "c", "id": "1", "fields": {"u": Boxed(uuid.UUID(int=1))}})
@example({"msg": "added", "collection": "c", "id": "1", "fields": {"e": Boxed(Colour.RED)}})
@example({"msg": "result", "id": "1", "error": {"details": {1: math.inf, None: [math.nan]}}})
@example({"msg": "added", "collection": "c", "id": "1", "fields": {"f": 1e-7, "g": 1e22, "h": -0.0}})
def test_the_text_sent_parses_to_the_json_modules(msg):
    try:
        expected = reference(msg)
    except EncodeError:
        with pytest.raises(EncodeError):
            stringify(msg)
        return
    text = stringify(msg)
    assert parsed(text) == parsed(expected)
    text.encode("utf-8")  # never a lone surrogate on the wire
    if "fields" in msg and msg["msg"] in ("added", "changed") and isinstance(msg.get("id"), str):
        assert parse(text) is not None  # and a DDP client reads it back


def test_deep_nesting_falls_back_and_stays_an_encode_error():
    deep = []
    for _ in range(300):  # orjson stops at 255 levels; the json module's limit is recursion
        deep = [deep]
    msg = {"msg": "added", "collection": "c", "id": "1", "fields": {"d": deep}}
    assert parsed(stringify(msg)) == parsed(reference(msg))
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(EncodeError):
        stringify({"msg": "added", "collection": "c", "id": "1", "fields": {"d": deep}})


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(texts, st.dictionaries(texts, EJSON, max_size=3), max_size=5))
def test_added_texts_are_stringify_s_and_shared_while_a_document_is_unchanged(docs):
    """What a welcome sends: the text of the ``added`` message, encoded once per document
    and observer, the same for every later subscriber until the document changes."""
    from ddpctl.livedata.publish import AddedTexts

    texts = AddedTexts("c")
    for doc_id, fields in docs.items():
        msg = {"msg": "added", "collection": "c", "id": doc_id, **({"fields": fields} if fields else {})}
        try:
            expected = stringify(msg)
        except EncodeError:
            with pytest.raises(EncodeError):
                texts.text(doc_id, fields)
            continue
        first = texts.text(doc_id, fields)
        assert first == expected
        assert texts.text(doc_id, fields) is first  # a later subscriber: no new encoding
        changed = {**fields, "x": 1}  # observers replace a changed document's fields
        assert parsed(texts.text(doc_id, changed)) == parsed(stringify({**msg, "fields": changed}))
    current = {doc_id: {} for doc_id in list(docs)[:1]}
    for i in range(100):
        texts.text(f"gone{i}", {})
    texts.prune(current)  # what is no longer held is forgotten
    assert set(texts._texts) <= set(current)


class Label(str):
    pass


class Count(enum.IntEnum):
    ONE = 1


# A row's values, mostly of the types added_text writes itself, and every kind that it
# must leave to stringify: non-finite floats, subclasses, integers beyond 64 bits, lone
# surrogates, keys that read back as EJSON types, nested dicts, dates, bytes, UUIDs, enums.
ROW_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1), FLOATS, texts,
    st.lists(st.one_of(st.none(), st.booleans(), st.integers(), texts, FLOATS), max_size=3),
    st.sampled_from([Label("x"), Count.ONE, 2 ** 64, -(2 ** 63) - 1, "a\ud800", uuid.UUID(int=7), Colour.RED,
                     b"\x00", [[1]], [Label("y")], (1, "t"), {"$date": 1}, {"k": [1]}]),
    values,
)
ROW_FIELDS = st.dictionaries(st.one_of(texts, st.sampled_from(["$date", "$escape", "$type", "$value"])),
                             ROW_VALUE, max_size=4)


@settings(max_examples=500, deadline=None)
@given(ROW_FIELDS, texts, texts)
@example({"$date": 5}, "c", "1")
@example({"$type": "oid", "$value": "x"}, "c", "1")
@example({"n": math.nan, "i": -math.inf, "z": -0.0, "f": 1e-7}, "c", "1")
@example({"l": [1, "a", None, True], "e": []}, "bookstore.book", "10")
def test_added_text_is_stringify_s_text_exactly(fields, collection, doc_id):
    """``added_text`` (one orjson call for a document in its own wire form) writes the very
    text ``stringify`` writes for the ``added`` message, character for character, and
    fails where it fails."""
    msg = {"msg": "added", "collection": collection, "id": doc_id, **({"fields": fields} if fields else {})}
    try:
        expected = stringify(msg)
    except EncodeError:
        with pytest.raises(EncodeError):
            added_text(collection, doc_id, fields)
        return
    assert added_text(collection, doc_id, fields) == expected
