"""Splitting HTTP header field values on a delimiter outside quoted strings.

RFC 9110 5.6.1 (comma-separated lists) and 5.6.4 (quoted strings with backslash escapes);
the same rule splits ``;``-separated parameters (RFC 7239 ``Forwarded`` pairs, RFC 7692
extension parameters).
"""
from __future__ import annotations

__all__ = ["split_outside_quotes"]


def split_outside_quotes(text: str, separator: str) -> list[str]:
    """``text`` split on ``separator`` where it is not inside a quoted string, the parts as
    they are (not stripped; empty parts kept).  An unterminated quote runs to the end (one
    malformed part, for the caller to refuse)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts
