"""Durations (``90s``, ``15m``, ``2h``, ``7d``) and the points in the changelog that
``tail --since`` and ``replay --since/--until`` accept: a position or a time."""
from __future__ import annotations

import datetime
import re
from typing import NamedTuple

__all__ = ["Point", "parse_duration", "parse_point"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> datetime.timedelta:
    """``"90"``/``"90s"``, ``"15m"``, ``"2h"``, ``"7d"``, ``"2w"``; ``ValueError`` otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"invalid duration {text!r} (examples: 90s, 15m, 2h, 7d)")
    unit = (match.group(2) or "s").lower()
    return datetime.timedelta(seconds=float(match.group(1)) * _UNITS[unit])


class Point(NamedTuple):
    """A changelog position (``position`` set) or a moment (``time`` set)."""

    position: int | None = None
    time: datetime.datetime | None = None


def parse_point(text: str, now: datetime.datetime | None = None,
                tz: datetime.tzinfo | None = None) -> Point:
    """``"1234"`` (a position), an ISO 8601 time (naive ones are in ``tz``), or a duration
    ago (``"10m"``, ``"2h"``).  ``ValueError`` with an example otherwise."""
    text = text.strip()
    if text.isdigit():
        return Point(position=int(text))
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        return Point(time=now - parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a position (1234), a time (2026-11-21T09:30) "
                         "nor a duration ago (10m, 2h)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz or datetime.UTC)
    return Point(time=moment)
