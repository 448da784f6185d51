"""DDP message framing: text <-> message dicts (ddp-common/utils.js ``parseDDP``/``stringifyDDP``).

Only ``fields``, ``params`` and ``result`` carry EJSON.  A cleared field travels in
``cleared`` (the mergebox builds it), never as a value in ``fields``.
"""
from __future__ import annotations

import json
from typing import Any

from .ejson import EJSONError, from_json_value, to_json_value

__all__ = ["ParseError", "parse", "stringify", "EJSON_FIELDS"]

EJSON_FIELDS = ("fields", "params", "result")

_decoder = json.JSONDecoder()
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


class ParseError(ValueError):
    """The frame was JSON but its EJSON could not be decoded (Meteor: ``Parse error``)."""


def parse(text: str | bytes) -> dict[str, Any] | None:
    """Parse one DDP frame.

    Returns ``None`` for anything that is not a JSON object (Meteor answers ``Bad request``)
    and raises ``ParseError`` when EJSON decoding fails.
    """
    try:
        msg = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(msg, dict):
        return None
    for key in EJSON_FIELDS:
        if key in msg:
            try:
                msg[key] = from_json_value(msg[key])
            except (EJSONError, RecursionError) as exc:
                raise ParseError(str(exc)) from None
    return msg


def stringify(msg: dict[str, Any]) -> str:
    """Serialize one outgoing DDP message; ``fields``/``params``/``result`` go through EJSON."""
    out = {}
    for key, value in msg.items():
        out[key] = to_json_value(value) if key in EJSON_FIELDS else value
    return _encode(out)
