"""Compressed bundle responses, as Meteor's webapp compresses them (the ``compression``
middleware in front of every response): gzip, or brotli when the client prefers it,
for compressible types (text, JavaScript, JSON, XML, SVG...) of at least 1 KiB, not for
``HEAD``, not when the request says ``X-No-Compression`` (webapp's ``shouldCompress``), and
here never for a byte range.  Such responses carry ``Vary: Accept-Encoding`` whether or not
they are compressed.

The choice follows ``Accept-Encoding`` q-values (RFC 9110 12.5.3); between equal ones
brotli wins.  Compressed bodies of files up to :data:`CACHE_FILE_LIMIT` are kept per file
version (path, size, modification time) and encoding, at most :data:`CACHE_BYTES` in all
(least recently used go first); bigger files are compressed as they are sent, 64 KiB at a
time, so memory per response stays bounded.
"""
from __future__ import annotations

import logging
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

try:
    import brotli
except ImportError:  # pragma: no cover - brotli is an install requirement
    brotli = None

__all__ = ["CACHE_BYTES", "CACHE_FILE_LIMIT", "THRESHOLD", "CompressedFiles", "choose_encoding",
           "compressible"]

logger = logging.getLogger(__name__)

THRESHOLD = 1024  # bytes: the compression middleware's default threshold
CACHE_FILE_LIMIT = 1 << 20
CACHE_BYTES = 32 << 20
CHUNK = 64 << 10
_TYPES = {"application/javascript", "application/json", "application/xml", "application/wasm",
          "application/manifest+json", "application/x-javascript", "image/svg+xml", "image/x-icon",
          "image/vnd.microsoft.icon", "font/ttf", "font/otf", "application/vnd.ms-fontobject"}


def compressible(content_type: str) -> bool:
    """Is a response of this ``Content-Type`` worth compressing (mime-db's
    ``compressible`` flag, roughly)?"""
    mime = content_type.split(";", 1)[0].strip().lower()
    return (mime.startswith("text/") or mime in _TYPES or mime.endswith("+json")
            or mime.endswith("+xml"))


def choose_encoding(environ: Mapping[str, Any]) -> str | None:
    """``"br"``, ``"gzip"`` or ``None`` (identity) for the request's ``Accept-Encoding``."""
    if environ.get("HTTP_X_NO_COMPRESSION") is not None:
        return None
    header = environ.get("HTTP_ACCEPT_ENCODING")
    if not header:
        return None
    weights: dict[str, float] = {}
    for item in header.split(","):
        name, *params = item.strip().split(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        weights[name] = q
    star = weights.get("*")
    candidates = [("br", 2), ("gzip", 1)] if brotli is not None else [("gzip", 1)]
    best = None
    best_key = (0.0, 0)
    for name, rank in candidates:
        q = weights.get(name, weights.get("x-gzip") if name == "gzip" else None)
        if q is None:
            q = star if star is not None else 0.0
        if q > 0 and (q, rank) > best_key:
            best, best_key = name, (q, rank)
    identity = weights.get("identity", star if star is not None else 1.0)
    if best is not None and best_key[0] < identity:
        return None
    return best


def _compressor(encoding: str) -> Any:
    if encoding == "br":
        return brotli.Compressor(quality=5)
    return zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: the gzip format


def _finish(compressor: Any) -> bytes:
    return compressor.finish() if hasattr(compressor, "finish") else compressor.flush()


def _process(compressor: Any, data: bytes) -> bytes:
    return compressor.process(data) if hasattr(compressor, "process") else compressor.compress(data)


class CompressedFiles:
    """Compressed bodies of files, cached per version (see the module docstring)."""

    def __init__(self, cache_bytes: int = CACHE_BYTES, file_limit: int = CACHE_FILE_LIMIT) -> None:
        self.cache_bytes = cache_bytes
        self.file_limit = file_limit
        self._cache: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    @property
    def cached_bytes(self) -> int:
        return self._size

    def body(self, path: Path, size: int, mtime_ns: int, encoding: str) -> bytes | Iterator[bytes]:
        """The file compressed: bytes when small enough to cache, else an iterator of chunks
        (``OSError`` if the file cannot be opened)."""
        if size > self.file_limit:
            return self._stream(open(path, "rb"), encoding)
        key = (str(path), size, mtime_ns, encoding)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        compressor = _compressor(encoding)
        with open(path, "rb") as file:
            data = _process(compressor, file.read(self.file_limit + 1)) + _finish(compressor)
        with self._lock:
            if key not in self._cache and len(data) <= self.cache_bytes:
                self._cache[key] = data
                self._size += len(data)
                while self._size > self.cache_bytes:
                    _, dropped = self._cache.popitem(last=False)
                    self._size -= len(dropped)
        return data

    @staticmethod
    def compress_bytes(data: bytes, encoding: str) -> bytes:
        """``data`` compressed with ``encoding`` (``"br"`` or ``"gzip"``)."""
        compressor = _compressor(encoding)
        return _process(compressor, data) + _finish(compressor)

    @staticmethod
    def _stream(file: Any, encoding: str) -> Iterator[bytes]:
        compressor = _compressor(encoding)
        try:
            while True:
                chunk = file.read(CHUNK)
                if not chunk:
                    break
                out = _process(compressor, chunk)
                if out:
                    yield out
            yield _finish(compressor)
        finally:
            file.close()
