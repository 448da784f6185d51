"""SockJS framing (sockjs-protocol 0.3), the websocket transport only.

Server frames: ``o`` open, ``h`` heartbeat, ``a[...]`` messages (each DDP message a JSON
string inside a JSON array), ``c[code,"reason"]`` close.  The client sends a JSON array of
strings or a single JSON string.

The size limit applies to each DDP message once unescaped, not to the frame: the frame
may be up to :func:`frame_limit` bytes, enough for one message of the limit with every
character escaped.
"""
from __future__ import annotations

import json
import secrets
from typing import Any

from .websocket import utf8_length

__all__ = ["OPEN", "HEARTBEAT", "messages_frame", "close_frame", "decode_client_frame",
           "info_body", "WELCOME", "MessageTooBig", "frame_limit"]

OPEN = "o"
HEARTBEAT = "h"
WELCOME = b"Welcome to SockJS!\n"
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def messages_frame(texts: list[str]) -> str:
    return "a" + _dumps(texts)


def close_frame(code: int, reason: str) -> str:
    return "c" + _dumps([code, reason])


class MessageTooBig(Exception):
    """A message in a SockJS frame is over the size limit (close 1009)."""


def frame_limit(max_message_size: int) -> int:
    """Largest WebSocket frame that may carry one message of ``max_message_size`` bytes:
    JSON escapes at most 6 bytes per byte (``\\u0000``), plus the ``["..."]`` around it."""
    return 6 * max_message_size + 4


def decode_client_frame(frame: str | bytes, max_message_size: int | None = None) -> list[str]:
    """The messages in one client frame.

    ``ValueError`` means broken framing, text that is not JSON (close 3000, as sockjs-node);
    ``MessageTooBig`` a message of more than ``max_message_size`` bytes in UTF-8 (close 1009).
    """
    if not frame:
        return []
    try:
        payload = json.loads(frame)
    except RecursionError:
        raise ValueError("a SockJS frame nested too deeply") from None
    # As sockjs-node: an array is a list of messages, anything else one message; a message
    # that is not a string reaches Meteor's DDP parser as JavaScript's String() of it, which
    # it discards ("Bad request": ``[5]``, ``[{}]``), and the connection lives on.
    items = payload if isinstance(payload, list) else [payload]
    messages = [item if isinstance(item, str) else _js_string(item, top=True) for item in items]
    if max_message_size is not None:
        for message in messages:
            if utf8_length(message) > max_message_size:
                raise MessageTooBig(f"SockJS message over {max_message_size} bytes")
    return messages


def _js_string(value: Any, top: bool = False) -> str:
    """JavaScript's ``String(value)`` for a JSON value (``Array.prototype.join`` semantics:
    ``null`` inside an array is empty)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null" if top else ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, dict):
        return "[object Object]"
    return ",".join(_js_string(item) for item in value)


def info_body(websocket: bool = True) -> bytes:
    """``GET /sockjs/info`` (sockjs-node 0.3.24 with CORS enabled)."""
    return _dumps({"websocket": websocket, "origins": ["*:*"], "cookie_needed": False,
                   "entropy": secrets.randbits(32)}).encode()
