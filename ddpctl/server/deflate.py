"""permessage-deflate (RFC 7692) for DDP WebSockets: negotiation, shared compressed frames,
and bounded inflation of what clients send.

Pure: no I/O, no gevent.  Meteor's server (faye-websocket with permessage-deflate) compresses
by default; so does ddpctl (``--no-websocket-compression`` turns it off).

Sending.  The server always answers with ``server_no_context_takeover`` (a server may add it
to any accepted offer, RFC 7692 7.1.1.1): each message is then compressed on its own, so the
compressed bytes of a DDP message are the same for every client that accepted the same window,
and a message fanned out to 1,000 clients is compressed once (:class:`FrameCompressor` keeps
the finished frames of recently sent texts in a bounded cache).  Messages shorter than
:data:`COMPRESSION_THRESHOLD` characters go out uncompressed (RSV1 clear), as other
permessage-deflate servers do (``ws``: 1 KiB): deflate saves a DDP message that short
about 10 % or less (``bench/compression.py`` prints the saving by size), and the client would
still pay for inflating it.

Receiving.  The answer also carries ``client_no_context_takeover`` (RFC 7692 7.1.1.2 lets a
server ask it in any response): the inflater of a client message lives only for that message,
so an idle connection holds no zlib state.  The message size limit applies to the inflated
size, and inflation stops one byte past it (``zlib``'s ``max_length``): a small frame that
would inflate to gigabytes costs at most the limit before the connection closes with 1009.
"""
from __future__ import annotations

import logging
import re
import struct
import zlib
from dataclasses import dataclass

from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

from .header_lists import split_outside_quotes

__all__ = ["DeflateParams", "negotiate", "FrameCompressor", "frame_compressor", "InboundDeflate",
           "COMPRESSION_THRESHOLD", "EXTENSION"]

logger = logging.getLogger(__name__)

EXTENSION = "permessage-deflate"
#: Texts shorter than this (in characters) are sent uncompressed.
COMPRESSION_THRESHOLD = 128
_LEVEL = 6  # zlib's default; a shared frame is compressed once per fan-out, not per client
_MEM_LEVEL = 8
_TAIL = b"\x00\x00\xff\xff"  # the empty stored block a sync flush ends with (RFC 7692 7.2.1)
_BITS = re.compile(r"[1-9][0-9]?")  # decimal, no leading zero (RFC 7692 7.1.2.1)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 7230 3.2.6
_HEADER_16 = struct.Struct("!BBH").pack
_HEADER_64 = struct.Struct("!BBQ").pack


@dataclass(frozen=True)
class DeflateParams:
    """What was agreed for one connection.

    ``server_max_window_bits`` (9..15) is the window the server compresses with; the server
    never keeps context between messages, the client never does either (both
    ``*_no_context_takeover`` are always in the response).  ``client_max_window_bits`` is
    what the client promised (15 when it did not say); inflation uses a 15-bit window, which
    reads any smaller one.
    """

    server_max_window_bits: int = 15
    client_max_window_bits: int = 15

    def response(self, offered_server_bits: bool, offered_client_bits: bool) -> str:
        parts = [EXTENSION, "server_no_context_takeover", "client_no_context_takeover"]
        if offered_server_bits:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if offered_client_bits:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)


def negotiate(header: str | None) -> tuple[str, DeflateParams] | None:
    """Accept the first acceptable permessage-deflate offer of a ``Sec-WebSocket-Extensions``
    request header (several header lines joined with ``,``, as WSGI servers do).

    Returns the response header value and the agreed parameters, or ``None`` (no offer, or
    none acceptable: the handshake goes on without compression, it never fails for this).
    An offer is declined if a parameter is unknown, repeated, has a value it must not have
    or a value out of range (RFC 7692 7.1); ``server_max_window_bits=8`` too, since zlib
    cannot deflate with a 256-byte window.  Other extensions are ignored.
    """
    if not header:
        return None
    for element in _split(header, ","):
        params = _split(element, ";")
        if not params or params[0].strip().lower() != EXTENSION:
            continue
        accepted = _accept(params[1:])
        if accepted is not None:
            return accepted
    return None


def _accept(params: list[str]) -> tuple[str, DeflateParams] | None:
    seen: dict[str, str | None] = {}
    for param in params:
        name, sep, value = param.partition("=")
        name = name.strip().lower()
        if not _TOKEN.fullmatch(name) or name in seen:
            return None
        parsed = _value(value.strip()) if sep else None
        if sep and parsed is None:
            return None
        seen[name] = parsed
    server_bits, client_bits = 15, 15
    for name, value in seen.items():
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                return None
        elif name == "server_max_window_bits":
            if value is None or not _BITS.fullmatch(value) or not 9 <= int(value) <= 15:
                return None
            server_bits = int(value)
        elif name == "client_max_window_bits":
            if value is not None:
                if not _BITS.fullmatch(value) or not 8 <= int(value) <= 15:
                    return None
                client_bits = int(value)
        else:
            return None
    agreed = DeflateParams(server_bits, client_bits)
    return (agreed.response("server_max_window_bits" in seen, seen.get("client_max_window_bits") is not None),
            agreed)


def _value(text: str) -> str | None:
    """A parameter value: a token, or a quoted-string whose content is a token (RFC 6455 9.1)."""
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"'):
            return None
        text = re.sub(r"\\(.)", r"\1", text[1:-1])
    return text if _TOKEN.fullmatch(text) else None


def _split(text: str, separator: str) -> list[str]:
    """``text``'s non-empty parts between ``separator``s outside quoted strings, stripped."""
    return [part for part in (p.strip() for p in split_outside_quotes(text, separator)) if part]


class FrameCompressor:
    """Complete server text frames, compressed (RSV1 set) when it pays, for one window size.

    Each text is deflated on its own (no context takeover), with the flush's trailing
    ``00 00 ff ff`` removed (RFC 7692 7.2.1); if that is not smaller than the text, the frame
    is a plain one.  Finished frames of texts of at least :data:`COMPRESSION_THRESHOLD`
    characters are kept in a least-recently-used cache of at most ``max_entries`` frames and
    ``max_bytes`` bytes (text plus frame; a text over an eighth of it is not kept), keyed by
    the text: the fan-out of one DDP message (the same ``str`` for every session) finds it
    there and costs a dict lookup per client, and so do the documents of a publication
    that client after client subscribes to, while they fit.
    """

    def __init__(self, window_bits: int = 15, max_entries: int = 32768, max_bytes: int = 16 << 20,
                 threshold: int = COMPRESSION_THRESHOLD) -> None:
        self.window_bits = window_bits
        self.threshold = threshold
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._cache: dict[str, bytes] = {}
        self._bytes = 0
        self.compressed = 0  # texts deflated (cache misses), for the bench and tests
        self._deflater = zlib.compressobj(_LEVEL, zlib.DEFLATED, -window_bits, _MEM_LEVEL)

    def frame(self, text: str) -> bytes:
        """The frame for ``text`` (``str`` of UTF-8 text; lone surrogates are an error as in
        ``str.encode``)."""
        if len(text) < self.threshold:
            return plain_frame(text)
        cache = self._cache
        cached = cache.pop(text, None)
        if cached is not None:
            cache[text] = cached  # most recently used last: eviction takes the oldest first
            return cached
        frame = self._compress(text.encode())
        size = len(text) + len(frame)
        if size <= self._max_bytes // 8:
            while cache and (len(cache) >= self._max_entries or self._bytes + size > self._max_bytes):
                old = next(iter(cache))
                self._bytes -= len(old) + len(cache.pop(old))
            cache[text] = frame
            self._bytes += size
        return frame

    def _compress(self, payload: bytes) -> bytes:
        self.compressed += 1
        # One deflater for every message: a full flush resets its history (the next message
        # refers to nothing before it, as no context takeover requires) and ends the output
        # like a sync flush, byte for byte what a new deflater would give, without the cost
        # of allocating one (~256 KiB of zlib state) per message: 6x faster.
        data = self._deflater.compress(payload) + self._deflater.flush(zlib.Z_FULL_FLUSH)
        data = data[:-4] if data.endswith(_TAIL) else data
        if len(data) >= len(payload):
            return text_frame(payload)
        return _frame(0xC1, data)  # FIN, RSV1, text


_compressors: dict[int, FrameCompressor] = {}


def frame_compressor(params: DeflateParams) -> FrameCompressor:
    """The process-wide compressor for the agreed window (one cache shared by all clients)."""
    bits = params.server_max_window_bits
    compressor = _compressors.get(bits)
    if compressor is None:
        compressor = _compressors[bits] = FrameCompressor(bits)
    return compressor


def text_frame(payload: bytes) -> bytes:
    """A complete, unmasked, uncompressed server text frame of ``payload`` (UTF-8).

    Built here rather than through wsproto's event objects: this runs once per message per
    client and dominates fan-out.  wsproto still parses everything the client sends."""
    return _frame(0x81, payload)


_PLAIN_FRAMES: dict[str, bytes] = {}
_plain_frames_bytes = 0
PLAIN_FRAME_CACHE_TEXT = 4096  # characters: longer texts are framed each time, not kept
PLAIN_FRAME_CACHE_ENTRIES = 4096  # frames kept, at most; then the cache is emptied
PLAIN_FRAME_CACHE_BYTES = 4 << 20  # ... and bytes of frames (the texts kept as keys about as much)


def plain_frame(text: str) -> bytes:
    """The uncompressed text frame for ``text`` (:func:`text_frame` of its UTF-8).

    Frames of texts up to :data:`PLAIN_FRAME_CACHE_TEXT` characters are kept in a
    process-wide cache keyed by the text, emptied whenever it would pass
    :data:`PLAIN_FRAME_CACHE_ENTRIES` frames or :data:`PLAIN_FRAME_CACHE_BYTES` bytes of
    them (the ``str`` keys hold about as much again): one DDP message fanned out to 1,000
    clients (the same ``str`` for every session) is encoded and framed once, then costs a
    dict lookup per client.  Lone surrogates raise ``UnicodeEncodeError`` as
    ``str.encode`` does."""
    global _plain_frames_bytes
    if len(text) > PLAIN_FRAME_CACHE_TEXT:
        return text_frame(text.encode())
    frame = _PLAIN_FRAMES.get(text)
    if frame is None:
        frame = text_frame(text.encode())
        if (len(_PLAIN_FRAMES) >= PLAIN_FRAME_CACHE_ENTRIES
                or _plain_frames_bytes + len(frame) > PLAIN_FRAME_CACHE_BYTES):
            _PLAIN_FRAMES.clear()
            _plain_frames_bytes = 0
        _PLAIN_FRAMES[text] = frame
        _plain_frames_bytes += len(frame)
    return frame


def _frame(first: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return _HEADER_16(first, 126, n) + payload
    return _HEADER_64(first, 127, n) + payload


class InboundDeflate(Extension):
    """wsproto extension inflating compressed client messages (RSV1 on a message's first
    frame), at most ``max_message_size`` bytes per message.

    Used for receiving only: the server builds its data frames itself
    (:class:`FrameCompressor`); control frames that wsproto sends pass through untouched.
    Past the limit the message fails with 1009 (``CloseReason.MESSAGE_TOO_BIG``); corrupt
    deflate data with 1007, RSV1 on a control or continuation frame with 1002 (RFC 7692 6).
    """

    name = EXTENSION

    def __init__(self, max_message_size: int) -> None:
        self.max_message_size = max_message_size
        self._inflater: zlib._Decompress | None = None  # the current message's, if compressed
        self._budget = 0
        self._frame_compressed = False
        self.inflated = 0  # bytes produced for the current message (tests look at it)

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool | str:
        return False  # server side only: offers are answered by negotiate()

    def frame_inbound_header(self, proto: FrameDecoder | FrameProtocol, opcode: Opcode, rsv: RsvBits,
                             payload_length: int) -> CloseReason | RsvBits:
        if opcode.iscontrol():
            if rsv.rsv1:
                return CloseReason.PROTOCOL_ERROR
            self._frame_compressed = False
            return RsvBits(True, False, False)
        if opcode is Opcode.CONTINUATION:
            if rsv.rsv1:
                return CloseReason.PROTOCOL_ERROR
        else:  # the first frame of a message says whether all of it is compressed
            self.inflated = 0
            if rsv.rsv1:
                self._inflater = zlib.decompressobj(-15)
                self._budget = self.max_message_size
            else:
                self._inflater = None
        self._frame_compressed = self._inflater is not None
        return RsvBits(True, False, False)

    def frame_inbound_payload_data(self, proto: FrameDecoder | FrameProtocol,
                                   data: bytes) -> bytes | CloseReason:
        if not self._frame_compressed:
            return data
        return self._inflate(data)

    def frame_inbound_complete(self, proto: FrameDecoder | FrameProtocol,
                               fin: bool) -> bytes | CloseReason | None:
        if not self._frame_compressed or not fin:
            return None
        result = self._inflate(_TAIL)
        self._inflater = None
        return result

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        inflater = self._inflater
        if inflater is None:  # this message already failed (wsproto stops parsing after it)
            return CloseReason.MESSAGE_TOO_BIG
        if inflater.eof:  # after a final block (BFINAL) the rest of the message is not deflate data
            return b""
        try:
            out = inflater.decompress(data, self._budget + 1)
        except zlib.error as exc:
            logger.info("WebSocket: bad deflate data from a client: %s", exc)
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self.inflated += len(out)
        self._budget -= len(out)
        if self._budget < 0:
            self._inflater = None
            return CloseReason.MESSAGE_TOO_BIG
        return out
