"""HTTP byte ranges and conditional requests for bundle files, as Meteor's webapp answers
them (it serves files with the npm ``send`` module, which parses ``Range`` with
``range-parser`` and combines overlapping ranges).

* ``Range: bytes=...`` with one range after combining: ``206`` and
  ``Content-Range: bytes START-END/SIZE`` (RFC 9110 14.4);
* no satisfiable range: ``416`` and ``Content-Range: bytes */SIZE`` (RFC 9110 15.5.17);
* several ranges that stay apart after combining, a malformed header, another unit, or an
  ``If-Range`` that does not hold: the whole file, ``200`` (``send`` does not write
  multipart/byteranges);
* ``If-Range``: holds only for an entity tag equal to the file's (Meteor turns
  ``Last-Modified`` off, so a date never holds);
* ``If-None-Match`` matching (weak comparison) or ``*``: ``304``; ``If-Match`` not matching:
  ``412`` (``send``'s ``fresh``/precondition checks).

One deliberate difference: a suffix range longer than the file (``bytes=-20000`` on a 10 KiB
file) selects the whole file (RFC 9110 14.1.2); ``range-parser`` counts it unsatisfiable.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MALFORMED", "UNSATISFIABLE", "etag_matches", "if_range_holds", "parse_range"]

UNSATISFIABLE = -1
MALFORMED = -2
_BYTES = re.compile(r"^ *bytes=")
_INT = re.compile(r"^\s*\+?(\d+)")


def _js_int(text: str | None) -> int | None:
    """JavaScript's ``parseInt(text, 10)`` for the non-negative values a range holds."""
    if text is None:
        return None
    match = _INT.match(text)
    return int(match.group(1)) if match else None


def parse_range(size: int, header: str) -> list[tuple[int, int]] | int:
    """The ranges of a ``Range`` header for a file of ``size`` bytes, as inclusive
    ``(start, end)`` pairs, overlapping and adjacent ones combined (in the order of their
    first byte's appearance); :data:`UNSATISFIABLE` if none can be served,
    :data:`MALFORMED` if the header is not a ``bytes`` range set."""
    if not _BYTES.match(header):
        return MALFORMED
    ranges: list[tuple[int, int]] = []
    for part in header.split("=", 1)[1].split(","):
        pieces = part.split("-")
        start = _js_int(pieces[0])
        end = _js_int(pieces[1] if len(pieces) > 1 else None)
        if start is None:
            if end is None:
                continue
            start, end = max(size - end, 0), size - 1  # suffix: the last END bytes
            if end < 0 or start > end:
                continue
        elif end is None:
            end = size - 1
        end = min(end, size - 1)
        if start > end:
            continue
        ranges.append((start, end))
    if not ranges:
        return UNSATISFIABLE
    return _combine(ranges)


def _combine(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    ordered = sorted(enumerate(ranges), key=lambda item: item[1][0])
    merged: list[list[int]] = []  # [start, end, first index]
    for index, (start, end) in ordered:
        if merged and start <= merged[-1][1] + 1:
            last = merged[-1]
            last[1] = max(last[1], end)
            last[2] = min(last[2], index)
        else:
            merged.append([start, end, index])
    merged.sort(key=lambda item: item[2])
    return [(start, end) for start, end, _ in merged]


def _tags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def etag_matches(header: str, etag: str) -> bool:
    """Does an ``If-None-Match``/``If-Match`` list hold ``etag``, or ``*`` (weak comparison,
    RFC 9110 8.8.3.2)?"""
    bare = etag.removeprefix("W/")
    return any(tag == "*" or tag.removeprefix("W/") == bare for tag in _tags(header))


def if_range_holds(environ: Mapping[str, Any], etag: str | None) -> bool:
    """Whether a ``Range`` may be honoured given the request's ``If-Range``."""
    condition = environ.get("HTTP_IF_RANGE")
    if not condition:
        return True
    return bool(etag) and '"' in condition and etag in condition
