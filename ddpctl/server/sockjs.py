"""SockJS framing (sockjs-protocol 0.3): frames, and how each HTTP transport wraps them.

Server frames: ``o`` open, ``h`` heartbeat, ``a[...]`` messages (each DDP message a JSON
string inside a JSON array), ``c[code,"reason"]`` close.  The client sends a JSON array of
strings or a single JSON string (over a WebSocket), a JSON array (``xhr_send``,
``jsonp_send``).

The HTTP transports carry the same frames, each wrapped for its response type as
sockjs-node 0.3 wraps them (``lib/trans-*.js``): a line of text (``xhr``,
``xhr_streaming``), a server-sent event (``eventsource``), a ``<script>`` calling the page's
callback (``htmlfile``), a JavaScript call (``jsonp``).  Pure functions only: the sessions
live in :mod:`.sockjs_session`, the endpoints in :mod:`.sockjs_http`.

The size limit applies to each DDP message once unescaped, not to the frame: the frame
may be up to :func:`frame_limit` bytes, enough for one message of the limit with every
character escaped.
"""
from __future__ import annotations

import hashlib
import json
import re
import secrets
from typing import Any
from urllib.parse import parse_qs

from .websocket import utf8_length

__all__ = ["OPEN", "HEARTBEAT", "messages_frame", "close_frame", "decode_client_frame",
           "info_body", "WELCOME", "MessageTooBig", "frame_limit", "http_messages_frame",
           "PayloadError", "decode_send_body", "decode_jsonp_send_body", "valid_callback",
           "xhr_chunk", "XHR_STREAMING_PRELUDE", "eventsource_chunk", "EVENTSOURCE_PRELUDE",
           "htmlfile_prelude", "htmlfile_chunk", "jsonp_chunk", "iframe_page", "SOCKJS_CLIENT_URL",
           "ANOTHER_CONNECTION"]

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
    payload = _loads(frame)
    # As sockjs-node: an array is a list of messages, anything else one message.
    return _messages(payload if isinstance(payload, list) else [payload], max_message_size)


def _loads(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("a SockJS frame nested too deeply") from None


def _messages(items: list[Any], max_message_size: int | None) -> list[str]:
    # A message that is not a string reaches Meteor's DDP parser as JavaScript's String()
    # of it, which it discards ("Bad request": ``[5]``, ``[{}]``), and the connection lives on.
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


def info_body(websocket: bool = True, cookie_needed: bool = False) -> bytes:
    """``GET /sockjs/info`` (sockjs-node 0.3.24 with CORS enabled; ``cookie_needed`` when
    the JSESSIONID cookie is set for load balancers)."""
    return _dumps({"websocket": websocket, "origins": ["*:*"], "cookie_needed": cookie_needed,
                   "entropy": secrets.randbits(32)}).encode()


class PayloadError(Exception):
    """An ``xhr_send``/``jsonp_send`` body sockjs-node answers with ``500`` and this text
    (``Payload expected.``, ``Broken JSON encoding.``); the session lives on."""


_XHR_TYPES = frozenset(("text/plain", "T", "application/json", "application/xml", "", "text/xml"))


def decode_send_body(body: bytes, content_type: str, max_message_size: int | None = None) -> list[str]:
    """The messages of an ``xhr_send`` body: a JSON array (sockjs-node ``expect_xhr`` +
    ``xhr_send``: the content types a browser's XHR may send, else no payload).

    Raises ``PayloadError`` (500), ``MessageTooBig`` (the session closes with 1009).
    """
    if content_type.split(";", 1)[0].strip() not in _XHR_TYPES:
        body = b""
    return _decode_array(body, max_message_size)


def decode_jsonp_send_body(body: bytes, content_type: str, max_message_size: int | None = None) -> list[str]:
    """The messages of a ``jsonp_send`` body: a form field ``d`` holding a JSON array (what
    sockjs-client's hidden form posts), or the JSON array itself as ``text/plain``; a JSON
    string holding the array is decoded once more (sockjs-node ``expect_form`` + ``jsonp_send``).

    Raises ``PayloadError`` (500), ``MessageTooBig``.
    """
    kind = content_type.split(";", 1)[0].strip()
    if kind == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise PayloadError("Broken JSON encoding.") from None
        value: Any = fields.get("d", [""])[-1]
        if not value:
            raise PayloadError("Payload expected.")
        return _decode_array(value.encode("utf-8"), max_message_size, twice=False)
    if kind not in ("text/plain", ""):
        raise PayloadError("Payload expected.")
    return _decode_array(body, max_message_size, twice=True)


def _decode_array(body: bytes, max_message_size: int | None, twice: bool = False) -> list[str]:
    if not body:
        raise PayloadError("Payload expected.")
    try:
        payload = _loads(body)
        if twice and isinstance(payload, str) and payload:
            payload = _loads(payload)
    except ValueError:  # includes a body that is not UTF-8
        raise PayloadError("Broken JSON encoding.") from None
    if not isinstance(payload, list):
        raise PayloadError("Payload expected.")
    return _messages(payload, max_message_size)


# sockjs-node's ``utils.quote``: besides what JSON escapes, characters that some browsers
# or proxies mangle (lone surrogates, invisible formatting characters, U+2028/2029 that end
# a line in older JavaScript, specials) travel as \uXXXX.
_UNSAFE = re.compile("[\x00-\x1f\ud800-\udfff\u200c-\u200f\u2028-\u202f\u2060-\u206f\ufff0-\uffff]")


def _escape_unsafe(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def http_messages_frame(texts: list[str]) -> str:
    """``a[...]`` for the HTTP transports, escaped as sockjs-node escapes every frame."""
    frame = messages_frame(texts)
    return frame if frame.isascii() else _UNSAFE.sub(_escape_unsafe, frame)


ANOTHER_CONNECTION = close_frame(2010, "Another connection still open")

# -- the HTTP transports' wrapping (sockjs-node 0.3 lib/trans-*.js) --------------------

# xhr, xhr_streaming: one frame per line.  A streaming response starts with 2048 ``h`` and
# a newline: Internet Explorer shows nothing of a response before its first 2 KiB.
XHR_STREAMING_PRELUDE = b"h" * 2048 + b"\n"


def xhr_chunk(frame: str) -> bytes:
    return (frame + "\n").encode("utf-8", "surrogatepass")


# eventsource: each frame a ``data:`` event; %, CR, LF and NUL percent-escaped (the frame
# is one line of the event; the client unescapes).  The response starts with a blank line
# (Opera needs it).
EVENTSOURCE_PRELUDE = b"\r\n"
_EVENT_UNSAFE = re.compile("[%\r\n\x00]")


def eventsource_chunk(frame: str) -> bytes:
    data = _EVENT_UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", frame)
    return f"data: {data}\r\n\r\n".encode("utf-8", "surrogatepass")


_CALLBACK = re.compile(r"[a-zA-Z0-9_.-]{1,32}")


def valid_callback(name: str) -> bool:
    """A ``c``/``callback`` parameter that may be written into a script: letters, digits,
    ``-_.``, at most 32 characters (sockjs-node refuses anything else with 500)."""
    return _CALLBACK.fullmatch(name) is not None


def _js_literal(frame: str, html: bool = False) -> str:
    """``frame`` as an ASCII JavaScript string literal (safe inside a script: no U+2028,
    and with ``html`` no ``<``, so no ``</script>`` either)."""
    literal = json.dumps(frame)
    return literal.replace("<", "\\u003c") if html else literal


def htmlfile_prelude(callback: str) -> bytes:
    """The page an ``htmlfile`` response starts with: it hands each later ``<script>`` chunk
    to ``parent.<callback>``, padded past the 1 KiB Safari reads before rendering anything."""
    page = ("<!doctype html>\n<html><head>\n"
            '  <meta http-equiv="X-UA-Compatible" content="IE=edge" />\n'
            '  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />\n'
            "</head><body><h2>SockJS htmlfile transport</h2>\n"
            "  <script>\n"
            "    document.domain = document.domain;\n"
            f"    var c = parent.{callback};\n"
            "    c.start();\n"
            "    function p(d) {c.message(d);};\n"
            "    window.onload = function() {c.stop();};\n"
            "  </script>\n")
    return (page + " " * max(0, 1024 - len(page)) + "\r\n\r\n").encode("ascii")


def htmlfile_chunk(frame: str) -> bytes:
    return f"<script>\np({_js_literal(frame, html=True)});\n</script>\r\n".encode("ascii")


def jsonp_chunk(callback: str, frame: str) -> bytes:
    """``/**/callback("frame");`` -- the comment keeps a response that starts with a
    caller-chosen name from being taken for a Flash file (sockjs-node #163)."""
    return f"/**/{callback}({_js_literal(frame)});\r\n".encode("ascii")


# The client library the iframe page loads (sockjs-node's ``sockjs_url`` option; Meteor
# leaves it at the default, the CDN's sockjs-client 1.x).
SOCKJS_CLIENT_URL = "https://cdn.jsdelivr.net/npm/sockjs-client@1/dist/sockjs.min.js"


def iframe_page(sockjs_url: str = SOCKJS_CLIENT_URL) -> tuple[bytes, str]:
    """``/sockjs/iframe*.html``: the hidden page the iframe-based transports run in (it
    loads sockjs-client and lets it talk to the parent page); with its quoted-MD5 ETag."""
    page = ("<!DOCTYPE html>\n<html>\n<head>\n"
            '  <meta http-equiv="X-UA-Compatible" content="IE=edge" />\n'
            '  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />\n'
            f'  <script src="{sockjs_url}"></script>\n'
            "  <script>\n    document.domain = document.domain;\n"
            "    SockJS.bootstrap_iframe();\n  </script>\n"
            "</head>\n<body>\n  <p>SockJS iframe transport page.</p>\n</body>\n</html>").encode()
    return page, '"' + hashlib.md5(page, usedforsecurity=False).hexdigest() + '"'
