"""DDP values: Python and Django values as EJSON-ready values, for publications and methods.

``to_ddp_value`` is the one conversion every value takes on its way to a client: model
fields in ``Collection.serialize``, fields given to a low-level ``Subscription.added`` /
``changed``, and method results.  Its output holds only what ``ddpctl.ddp.ejson`` encodes
(``None``, ``bool``, ``int``, ``float``, ``str``, ``list``, ``dict`` with ``str`` keys,
aware ``datetime``, ``bytes``, ``RegExp`` and ``add_type`` types), so a value that was
accepted can always be sent.  The mapping (README.rst, "Document ids and values"):

- ``Decimal`` -> a string in fixed-point notation, every digit and trailing zero kept
  (``"12.50"``, ``"-0.0000000001"``, never ``"1E-10"``; ``"NaN"``, ``"Infinity"``); a JSON
  number would lose digits in JavaScript.
- ``UUID`` -> its canonical text; ``ipaddress`` addresses, networks and interfaces -> text.
- ``datetime`` -> EJSON ``$date`` (milliseconds since the epoch; sub-millisecond digits are
  dropped by the encoder).  A naive datetime is read in Django's default time zone
  (``TIME_ZONE``), as Django itself does.  ``date`` -> ``$date`` at 00:00 UTC of that day.
- ``time`` -> ``"HH:MM:SS[.ffffff]"`` (``isoformat``); ``timedelta`` -> seconds as a float.
- ``bytes``, ``bytearray``, ``memoryview`` -> ``bytes`` (EJSON ``$binary``).
- ``float`` stays a float: NaN and infinities travel as EJSON ``$InfNaN``.
- PostgreSQL ranges (psycopg's ``Range``: ``NumericRange``, ``DateRange``,
  ``DateTimeTZRange``) -> ``{"lower", "upper", "bounds", "empty"}``: bounds converted by
  this table (``None`` when unbounded), ``bounds`` like ``"[)"`` (``None`` when empty).
- ``list``, ``tuple`` -> list; ``set``, ``frozenset`` -> list in a stable order (sorted, or
  by EJSON text when the elements do not compare); ``dict`` -> dict with ``str`` keys
  (``int``, ``Decimal``, ``UUID`` and enum keys become their text).
- Enum members (``TextChoices``, ``IntegerChoices``, ...) -> their value; ``str`` and
  ``int`` subclasses and lazy translation strings -> plain ``str`` / ``int``.
- A ``FieldFile`` (``FileField``, ``ImageField``) -> its name, ``None`` when empty.

Anything else (model instances, querysets, generators, arbitrary objects) raises
``TypeError`` naming the type and where it was found, e.g.
``method 'report' result['rows'][2]: Book is not a DDP value``.
"""
from __future__ import annotations

import datetime
import decimal
import enum
import ipaddress
import json
import re
import uuid
from typing import Any

from django.db.models import Model, QuerySet
from django.db.models.fields.files import FieldFile
from django.utils import timezone
from django.utils.functional import Promise

from .ddp.ejson import JSDate, RegExp, has_type, to_json_value

__all__ = ["to_ddp_value"]

try:  # the Range class of whichever psycopg Django uses
    from django.db.backends.postgresql.psycopg_any import Range as _Range
except ImportError:  # pragma: no cover - no psycopg installed
    _Range = None

_PLAIN = frozenset({str, int, bool, float, type(None)})  # sent as they are
_IP_TYPES = (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network,
             ipaddress.IPv6Network, ipaddress.IPv4Interface, ipaddress.IPv6Interface)
_HINTS = {
    Model: "send its pk or a dict of the fields the client needs",
    QuerySet: "send list(queryset.values(...)) or list(queryset.values_list(...))",
}


class _Unsupported(Exception):
    """A value with no DDP mapping; ``path`` grows as the error leaves nested containers."""

    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value
        self.path: list[str] = []


def to_ddp_value(value: Any, where: str = "value") -> Any:
    """``value`` as an EJSON-ready value (the mapping in the module docstring).

    ``where`` names the value in the ``TypeError`` raised for a type with no mapping
    (``"testapp.Book.prices"``, ``"result of method 'x'"``).
    """
    try:
        return _convert(value)
    except _Unsupported as exc:
        kind = type(exc.value)
        hint = next((h for base, h in _HINTS.items() if isinstance(exc.value, base)), None)
        path = "".join(reversed(exc.path))
        message = f"{where}{path}: {kind.__module__}.{kind.__qualname__} is not a DDP value"
        raise TypeError(f"{message} ({hint})" if hint else message) from None


def _convert(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if isinstance(value, enum.Enum):
        return _convert(value.value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):  # bool was handled above; int subclasses that are not enums
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        out = {}
        key = None
        try:
            for key, item in value.items():
                out[key if type(key) is str else _key(key)] = item if type(item) in _PLAIN else _convert(item)
        except _Unsupported as exc:
            exc.path.append(f"[{key!r}]")
            raise
        return out
    if isinstance(value, (list, tuple)):
        return _convert_items(value)
    if isinstance(value, (set, frozenset)):
        items = _convert_items(list(value))
        try:
            return sorted(items)
        except TypeError:  # mixed types: order by their EJSON text
            return sorted(items, key=lambda v: json.dumps(to_json_value(v), sort_keys=True))
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            return timezone.make_aware(value, timezone.get_default_timezone())
        return value
    if isinstance(value, datetime.date):
        return datetime.datetime(value.year, value.month, value.day, tzinfo=datetime.UTC)
    if isinstance(value, datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, _IP_TYPES):
        return str(value)
    if _Range is not None and isinstance(value, _Range):
        if value.isempty:
            return {"lower": None, "upper": None, "bounds": None, "empty": True}
        return {"lower": _convert(value.lower), "upper": _convert(value.upper),
                "bounds": ("[" if value.lower_inc else "(") + ("]" if value.upper_inc else ")"),
                "empty": False}
    if isinstance(value, FieldFile):
        return value.name or None
    if isinstance(value, Promise):  # gettext_lazy and friends
        return str(value)
    if isinstance(value, (RegExp, JSDate, re.Pattern)) or has_type(kind):
        return value
    raise _Unsupported(value)


def _convert_items(items: list | tuple) -> list:
    try:
        return [item if type(item) in _PLAIN else _convert(item) for item in items]
    except _Unsupported:
        for i, item in enumerate(items):  # which item: convert them again, one by one
            try:
                _convert(item)
            except _Unsupported as exc:
                exc.path.append(f"[{i}]")
                raise
        raise


def _key(key: Any) -> str:
    if type(key) is str:
        return key
    converted = _convert(key)
    if isinstance(converted, str) or (isinstance(converted, int) and not isinstance(converted, bool)):
        return str(converted)
    raise _Unsupported(key)
