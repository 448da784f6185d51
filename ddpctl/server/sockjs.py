"""SockJS framing (sockjs-protocol 0.3), the websocket transport only.

Server frames: ``o`` open, ``h`` heartbeat, ``a[...]`` messages (each DDP message a JSON
string inside a JSON array), ``c[code,"reason"]`` close.  The client sends a JSON array of
strings or a single JSON string.
"""
from __future__ import annotations

import json
import secrets

__all__ = ["OPEN", "HEARTBEAT", "messages_frame", "close_frame", "decode_client_frame",
           "info_body", "WELCOME"]

OPEN = "o"
HEARTBEAT = "h"
WELCOME = b"Welcome to SockJS!\n"
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def messages_frame(texts: list[str]) -> str:
    return "a" + _dumps(texts)


def close_frame(code: int, reason: str) -> str:
    return "c" + _dumps([code, reason])


def decode_client_frame(frame: str) -> list[str]:
    """The messages in one client frame; ``ValueError`` means broken framing (close 3000)."""
    if not frame:
        return []
    payload = json.loads(frame)
    if isinstance(payload, str):
        return [payload]
    if isinstance(payload, list) and all(isinstance(p, str) for p in payload):
        return payload
    raise ValueError("a SockJS frame must hold a string or an array of strings")


def info_body(websocket: bool = True) -> bytes:
    """``GET /sockjs/info`` (sockjs-node 0.3.24 with CORS enabled)."""
    return _dumps({"websocket": websocket, "origins": ["*:*"], "cookie_needed": False,
                   "entropy": secrets.randbits(32)}).encode()
