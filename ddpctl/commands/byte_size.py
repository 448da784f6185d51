"""A Click parameter type for byte counts: ``65536``, ``512K``, ``64M``, ``1G``."""
from __future__ import annotations

from typing import Any

import click

from ..config import parse_size

__all__ = ["ByteSize"]


class ByteSize(click.ParamType):
    """Bytes, at least ``min``: an int, or a string :func:`ddpctl.config.parse_size` reads
    (K, M, G suffixes, units of 1024)."""

    name = "bytes"

    def __init__(self, min: int = 0) -> None:
        self.min = min

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            self.fail(f"{value!r} is not a byte count", param, ctx)
        try:
            size = parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if size < self.min:
            self.fail(f"{value} is below the minimum of {self.min >> 10}K" if self.min >= 1024
                      else f"{value} is below the minimum of {self.min}", param, ctx)
        return size
