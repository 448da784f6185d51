"""DDP message framing: text <-> message dicts (ddp-common/utils.js ``parseDDP``/``stringifyDDP``).

Only ``fields``, ``params`` and ``result`` carry EJSON.  A cleared field travels in
``cleared`` (the mergebox builds it), never as a value in ``fields``.

Numbers follow JavaScript's ``JSON.parse``: the literals ``NaN``/``Infinity`` are not JSON;
an integer too long for Python's int-to-string limit becomes a float (``inf`` past the float
range), as it would in JavaScript.  Any value ``parse`` accepts, ``stringify`` can send back.
"""
from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping
from typing import Any

import orjson

from .ejson import MAX_DEPTH, EJSONError, _matches_builtin, from_json_value, to_json_value

__all__ = ["ParseError", "EncodeError", "parse", "stringify", "added_text", "encoded_size", "EJSON_FIELDS"]

EJSON_FIELDS = ("fields", "params", "result")

_MAX_INT_DIGITS = sys.get_int_max_str_digits() or 4300
_SURROGATE = re.compile("[\ud800-\udfff]")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _js_int(text: str) -> int | float:
    return int(text) if len(text) < _MAX_INT_DIGITS else float(text)


_decode = json.JSONDecoder(parse_int=_js_int, parse_constant=_reject_constant).decode
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_encode_ascii = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


class ParseError(ValueError):
    """The frame was JSON but its EJSON could not be decoded (Meteor: ``Parse error``)."""


class EncodeError(ValueError):
    """An outgoing message that cannot be serialized (a value that is not EJSON, nesting too
    deep for the encoder, a custom type's encoder failing)."""


def parse(text: str | bytes) -> dict[str, Any] | None:
    """Parse one DDP frame.

    Returns ``None`` for anything that is not a JSON object, including bytes that are not
    UTF-8 (Meteor answers ``Bad request``), and raises ``ParseError`` when EJSON decoding
    fails or the message nests deeper than :data:`~ddpctl.ddp.ejson.MAX_DEPTH`.
    """
    try:
        msg = _decode(text.decode("utf-8") if isinstance(text, bytes) else text)
    except RecursionError:
        raise ParseError(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # includes UnicodeDecodeError
        return None
    if not isinstance(msg, dict):
        return None
    for key, value in msg.items():
        if key in EJSON_FIELDS:
            try:
                msg[key] = from_json_value(value)
            except (EJSONError, RecursionError) as exc:
                raise ParseError(str(exc)) from None
        elif isinstance(value, (dict, list)) and _deeper_than(value, MAX_DEPTH):
            raise ParseError(f"nested deeper than {MAX_DEPTH} levels")
    return msg


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _wire_form(msg: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in msg.items():
        if key in EJSON_FIELDS:
            out[key] = to_json_value(value)
        elif key == "offendingMessage" and isinstance(value, dict):
            # The client's message as it sent it: its EJSON fields encoded again.
            out[key] = {k: to_json_value(v) if k in EJSON_FIELDS else v for k, v in value.items()}
        else:
            out[key] = value
    return out


def _json_stringify_form(value: Any) -> Any:
    """``JSON.stringify``'s view of plain JSON: NaN and ±Infinity become ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_stringify_form(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_stringify_form(v) for v in value]
    return value


# orjson: the value's types checked, not converted -- str, int, dict and list subclasses
# (e.g. a custom type's CustomValue), datetimes and dataclasses go to ``default``, which
# has none: they, and anything else orjson refuses, fall back to the json module.
_ORJSON_OPTIONS = (orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATETIME
                   | orjson.OPT_PASSTHROUGH_DATACLASS)
_SIMPLE = frozenset({str, int, bool, type(None)})


def _simple_envelope(msg: dict[str, Any]) -> bool:
    """True if every value of ``msg`` outside its EJSON fields is a str, int, bool, None or a
    list of str (the envelope of data, ``ready``, ``updated``, ``result`` messages)."""
    for key, value in msg.items():
        kind = type(value)
        if kind in _SIMPLE or key in EJSON_FIELDS:
            continue
        if kind is not list or any(type(item) is not str for item in value):
            return False
    return True


def stringify(msg: dict[str, Any]) -> str:
    """Serialize one outgoing DDP message; ``fields``/``params``/``result`` go through EJSON,
    and so do those of an ``offendingMessage``.

    Outside EJSON fields a non-finite float becomes ``null`` (``JSON.stringify``).  Lone
    surrogates are sent as ``\\udXXX`` escapes, so the text always encodes to UTF-8.
    Raises ``EncodeError`` for anything else that cannot be serialized.

    The text is orjson's (about 3x faster than the json module) when the message's envelope
    is plain (:func:`_simple_envelope`; the EJSON fields' wire form holds only JSON types,
    but for the ``$value`` of custom types, which the json module encodes) and orjson takes
    it; else, and for what orjson refuses (integers beyond 64 bits, lone surrogates, nesting
    deeper than 254), the json module's.  Both parse to the same JSON
    (``tests/test_ddp_encoding.py``); the texts differ only in a float's exponent (``1e-7``
    for ``1e-07``).
    """
    try:
        out = _wire_form(msg)
        if _simple_envelope(msg):
            try:
                return orjson.dumps(out, option=_ORJSON_OPTIONS).decode()
            except TypeError:  # orjson.JSONEncodeError: the json module decides
                pass
        return _json_text(out)
    except (TypeError, ValueError, RecursionError) as exc:
        raise EncodeError(f"cannot encode a {msg.get('msg')!r} message: {exc}") from exc


_NATIVE = frozenset({str, int, bool, type(None)})  # exact types to_json_value returns as they are


def _native_fields(fields: dict[str, Any]) -> bool:
    """True if ``fields`` is its own EJSON wire form, which orjson writes as :func:`stringify`
    does: values of exactly str, int, bool, None, a finite float or a list of the first
    four; not a dict that reads back as an EJSON type (``{"$date": 1}``: escaped)."""
    for value in fields.values():
        kind = type(value)
        if kind in _NATIVE:
            continue
        if kind is list:
            if value and not set(map(type, value)) <= _NATIVE:
                return False
            continue
        if kind is float and value - value == 0.0:  # not NaN or +-inf (EJSON $InfNaN)
            continue
        return False
    return len(fields) > 2 or not _matches_builtin(fields)


def added_text(collection: str, doc_id: str, fields: Mapping[str, Any]) -> str:
    """``stringify({"msg": "added", "collection": collection, "id": doc_id, "fields": fields})``
    (no ``fields`` when empty), the same text, with one orjson call and no wire-form copy when
    ``fields`` is a dict that is its own wire form (strings, numbers, booleans, null, lists
    of those: a typical row; :func:`_native_fields`); else through :func:`stringify`.
    Raises ``EncodeError`` like it."""
    if (type(fields) is dict and fields and type(collection) is str and type(doc_id) is str
            and _native_fields(fields)):
        try:
            return _dumps({"msg": "added", "collection": collection, "id": doc_id, "fields": fields},
                          option=_ORJSON_OPTIONS).decode()
        except TypeError:  # integers beyond 64 bits, lone surrogates, non-str keys: stringify decides
            pass
    msg: dict[str, Any] = {"msg": "added", "collection": collection, "id": doc_id}
    if fields:
        msg["fields"] = fields
    return stringify(msg)


_dumps = orjson.dumps


def _json_text(out: dict[str, Any]) -> str:
    """The json module's text of a message's wire form (:func:`stringify`)."""
    try:
        text = _encode(out)
    except ValueError:  # a non-finite float where JSON has no EJSON to carry it
        out = _json_stringify_form(out)
        text = _encode(out)
    if not text.isascii() and _SURROGATE.search(text):
        text = _encode_ascii(out)
    return text


def encoded_size(value: Any) -> int:
    """Bytes of ``value``'s EJSON text in UTF-8 (what it weighs on the wire).

    Raises ``EncodeError`` if it cannot be encoded.
    """
    try:
        return len(_encode(to_json_value(value)).encode("utf-8", "surrogatepass"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise EncodeError(f"cannot encode {type(value).__name__}: {exc}") from exc
