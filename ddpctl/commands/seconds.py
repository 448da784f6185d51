"""A Click parameter type for durations in seconds: finite, within bounds."""
from __future__ import annotations

import math
from typing import Any

import click

__all__ = ["Seconds", "DAY"]

DAY = 86_400.0


class Seconds(click.FloatRange):
    """Seconds between ``min`` and ``max`` (a day by default); NaN and infinities are refused
    (``click.FloatRange`` lets NaN through, and an unbounded value overflows PostgreSQL's
    intervals and timestamps)."""

    name = "seconds"

    def __init__(self, min: float = 0.0, max: float = DAY) -> None:
        super().__init__(min=min, max=max)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds.", param, ctx)
        return seconds
