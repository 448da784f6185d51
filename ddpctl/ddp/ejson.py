"""EJSON, Meteor's extended JSON (packages/ejson/ejson.js).

``to_json_value`` turns Python values into JSON-compatible values, ``from_json_value``
the reverse.  Converters are tried in Meteor's order: Date, RegExp, InfNaN, Binary,
escape, custom ``$type``.  Key order is preserved both ways.

Every value a client can send decodes to something that encodes back to the same wire
form (or to an ``EJSONError``, which Meteor's server answers with ``Parse error``):

* ``{"$date": ms}`` takes any time JavaScript's ``Date`` holds (|ms| <= 8.64e15, fractions
  truncated toward zero like ECMAScript's TimeClip).  Inside Python's years 1..9999 it is an
  aware UTC ``datetime``; outside, a :class:`JSDate` that encodes back unchanged.
* Nesting is bounded: a value nested deeper than :data:`MAX_DEPTH` arrays/objects is an
  ``EJSONError`` (never a ``RecursionError``).
* A custom type's decoder that raises anything makes the value an ``EJSONError``; its
  encoder that raises anything makes ``to_json_value`` raise ``TypeError``.
"""
from __future__ import annotations

import base64
import binascii
import datetime
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EJSONError", "RegExp", "ObjectID", "JSDate", "JS_DATE_LIMIT", "MAX_DEPTH", "CustomValue", "add_type",
    "has_type", "to_json_value", "from_json_value", "equals",
]

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_JS_FLAGS = "gimuy"
JS_DATE_LIMIT = 8_640_000_000_000_000  # ms either side of the epoch (ECMAScript TimeClip)
# Nesting allowed in a decoded value: MongoDB's 100-level document limit, plus room for the
# ``$escape`` wrappers and a few levels of envelope.
MAX_DEPTH = 128


class EJSONError(ValueError):
    """A value that is not valid EJSON (Meteor answers such a frame with ``Parse error``)."""


@dataclass(frozen=True)
class RegExp:
    """A JavaScript regular expression, kept as source and flags (JS syntax is not Python's)."""

    source: str
    flags: str = ""


@dataclass(frozen=True)
class JSDate:
    """A JavaScript ``Date`` outside Python's ``datetime`` range (before year 1 or after 9999).

    ``ms`` is milliseconds since 1970-01-01T00:00:00Z (an integer, |ms| <= 8.64e15); it is
    sent back as ``{"$date": ms}``.  Dates inside the range decode to ``datetime`` instead.
    """

    ms: int


@dataclass(frozen=True)
class ObjectID:
    """A MongoDB ObjectID (EJSON custom type ``oid``)."""

    hex: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{24}", self.hex):
            raise EJSONError(f"Invalid hexadecimal string for creating an ObjectID: {self.hex!r}")


@dataclass(frozen=True)
class _CustomType:
    cls: type
    to_json: Callable[[Any], Any]
    from_json: Callable[[Any], Any]


_types_by_name: dict[str, _CustomType] = {}
_names_by_class: dict[type, str] = {}


def add_type(name: str, cls: type, to_json: Callable[[Any], Any],
             from_json: Callable[[Any], Any]) -> None:
    """Register a custom EJSON type sent as ``{"$type": name, "$value": to_json(obj)}``."""
    _types_by_name[name] = _CustomType(cls, to_json, from_json)
    _names_by_class[cls] = name


def has_type(cls: type) -> bool:
    """True if ``cls`` was registered with ``add_type``."""
    return cls in _names_by_class


add_type("oid", ObjectID, lambda oid: oid.hex, ObjectID)


class CustomValue(dict):
    """The wire form of a custom type, ``{"$type": name, "$value": ...}``: a plain dict but
    for its class, which tells encoders that ``$value`` is what the type's ``to_json``
    returned, unchecked (see :func:`ddpctl.ddp.messages.stringify`)."""

    __slots__ = ()


def _date_ms(value: datetime.datetime) -> int:
    if value.tzinfo is None:  # naive datetimes are taken as UTC, like Django with USE_TZ=False
        value = value.replace(tzinfo=datetime.UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000)


_DATETIME_MIN_MS = _date_ms(datetime.datetime.min)
_DATETIME_MAX_MS = _date_ms(datetime.datetime.max)


def _decode_date(val: Any) -> datetime.datetime | JSDate:
    if isinstance(val, bool) or not isinstance(val, (int, float)):
        raise EJSONError(f"Invalid $date value: {val!r}")
    if not abs(val) <= JS_DATE_LIMIT:  # also NaN; ints compare exactly, however large
        raise EJSONError(f"$date out of JavaScript's range (|ms| <= 8.64e15): {val!r}")
    ms = int(val)  # TimeClip: toward zero
    if _DATETIME_MIN_MS <= ms <= _DATETIME_MAX_MS:
        return _EPOCH + datetime.timedelta(milliseconds=ms)
    return JSDate(ms)


def _matches_builtin(obj: dict) -> bool:
    """True if a plain object would be read back as an EJSON type (so it needs ``$escape``)."""
    n = len(obj)
    if n == 1:
        return next(iter(obj)) in ("$date", "$InfNaN", "$binary", "$escape")
    if n == 2:
        keys = set(obj)
        return keys == {"$regexp", "$flags"} or keys == {"$type", "$value"}
    return False


_AS_IS = frozenset({str, int, bool, type(None)})  # exact types to_json_value returns unchanged


def _is_wire_form(value: dict) -> bool:
    """True if ``value``'s keys are strings and its values str, int, bool, None or lists of
    those: it is its own wire form (once escaped if it looks like an EJSON type)."""
    for key, item in value.items():
        if type(key) is not str:
            return False
        kind = type(item)
        if kind in _AS_IS:
            continue
        if kind is not list:
            return False
        for element in item:
            if type(element) not in _AS_IS:
                return False
    return True


def to_json_value(value: Any) -> Any:
    """Convert a Python value to its EJSON wire form (a JSON-compatible value).

    The result may be ``value`` itself, or share parts with it (a dict or list already in
    its wire form): treat it as read-only."""
    if value is None or value is True or value is False or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return {"$InfNaN": 0}
        if math.isinf(value):
            return {"$InfNaN": 1 if value > 0 else -1}
        return value
    if type(value) is dict and _is_wire_form(value):  # a document of strings and numbers, typically
        return {"$escape": value} if _matches_builtin(value) else value
    if isinstance(value, dict):
        # values that are their own wire form are taken as they are, without a call each
        converted = {k if type(k) is str else str(k): v if type(v) in _AS_IS else to_json_value(v)
                     for k, v in value.items()}
        return {"$escape": converted} if _matches_builtin(value) else converted
    if isinstance(value, (list, tuple)):
        return [v if type(v) in _AS_IS else to_json_value(v) for v in value]
    if isinstance(value, datetime.datetime):
        return {"$date": _date_ms(value)}
    if isinstance(value, datetime.date):
        return {"$date": _date_ms(datetime.datetime(value.year, value.month, value.day))}
    if isinstance(value, JSDate):
        return {"$date": value.ms}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$binary": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, RegExp):
        return {"$regexp": value.source, "$flags": value.flags}
    if isinstance(value, re.Pattern):
        flags = ("i" if value.flags & re.IGNORECASE else "") + ("m" if value.flags & re.MULTILINE else "")
        return {"$regexp": value.pattern, "$flags": flags}
    name = _names_by_class.get(type(value))
    if name is not None:
        try:
            return CustomValue({"$type": name, "$value": _types_by_name[name].to_json(value)})
        except Exception as exc:
            raise TypeError(f"EJSON type {name!r} could not encode {value!r}: {exc!r}") from exc
    raise TypeError(f"{type(value).__name__} is not EJSON serializable")


def equals(a: Any, b: Any) -> bool:
    """Meteor's ``EJSON.equals`` on Python values: what a client can tell apart.

    NaN equals NaN, ``-0.0`` equals ``0.0`` and ``1`` equals ``1.0`` (one JavaScript
    number), ``True`` differs from ``1``; arrays compare in order, objects regardless of key
    order; dates by their milliseconds, binary by its bytes, other types by their EJSON form.
    Raises ``TypeError`` for a value ``to_json_value`` cannot encode.
    """
    if a is b:
        return True
    kind_a, kind_b = type(a), type(b)
    if kind_a is kind_b and (kind_a is str or kind_a is int):
        return a == b
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return kind_a is kind_b and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (a != a and b != b)  # NaN: the only value not equal to itself
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return len(a) == len(b) and all(k in b and equals(v, b[k]) for k, v in a.items())
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(equals(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (dict, list, tuple, int, float)) and isinstance(b, (dict, list, tuple, int, float)):
        return False  # JSON kinds that differ (a number and an array: was endless recursion)
    return equals(to_json_value(a), to_json_value(b))


def _from_special(obj: dict, depth: int) -> Any:
    """Decode ``obj`` if it is an EJSON type; return ``obj`` itself otherwise."""
    n = len(obj)
    if n > 2 or not all(isinstance(k, str) and k.startswith("$") for k in obj):
        return obj
    if n == 1:
        key, val = next(iter(obj.items()))
        if key == "$date":
            return _decode_date(val)
        if key == "$InfNaN":
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                raise EJSONError(f"Invalid $InfNaN value: {val!r}")
            return math.nan if val == 0 else (math.inf if val > 0 else -math.inf)
        if key == "$binary":
            if not isinstance(val, str):
                raise EJSONError("Invalid $binary value")
            try:
                return base64.b64decode(val, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise EJSONError(f"Invalid base64 in $binary: {exc}") from None
        if key == "$escape":
            if not isinstance(val, dict):
                raise EJSONError("Invalid $escape value")
            return {k: _decode(v, depth - 1) for k, v in val.items()}
        return obj
    if "$regexp" in obj and "$flags" in obj:
        source, flags = obj["$regexp"], obj["$flags"]
        if not isinstance(source, str) or not isinstance(flags, str):
            raise EJSONError("Invalid $regexp value")
        # Meteor drops unknown and repeated flags and keeps at most 50 characters.
        kept = "".join(dict.fromkeys(f for f in flags[:50] if f in _JS_FLAGS))
        return RegExp(source, kept)
    if "$type" in obj and "$value" in obj:
        name = obj["$type"]
        custom = _types_by_name.get(name) if isinstance(name, str) else None
        if custom is None:
            raise EJSONError(f"Custom EJSON type {name} is not defined")
        try:
            return custom.from_json(obj["$value"])
        except EJSONError:
            raise
        except Exception as exc:  # a user decoder may raise anything: the value is bad
            raise EJSONError(f"Invalid value for EJSON type {name}: {exc!r}") from None
    return obj


def from_json_value(value: Any) -> Any:
    """Convert a parsed JSON value (EJSON wire form) to Python values.

    Raises ``EJSONError`` for a value Meteor would not decode or one nested deeper than
    :data:`MAX_DEPTH`.
    """
    return _decode(value, MAX_DEPTH)


def _decode(value: Any, depth: int) -> Any:
    if isinstance(value, dict):
        if depth <= 0:
            raise EJSONError(f"EJSON value nested deeper than {MAX_DEPTH} levels")
        special = _from_special(value, depth)
        if special is not value:
            return special
        return {k: _decode(v, depth - 1) for k, v in value.items()}
    if isinstance(value, list):
        if depth <= 0:
            raise EJSONError(f"EJSON value nested deeper than {MAX_DEPTH} levels")
        return [_decode(v, depth - 1) for v in value]
    return value
