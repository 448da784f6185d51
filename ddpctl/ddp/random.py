"""Meteor's ``Random``: ids, secrets and the Alea generator behind ``randomSeed`` streams.

``random_id()`` uses the OS's cryptographic source like Meteor's server.  ``Alea`` ports
packages/random/AleaRandomGenerator.js bit for bit, so ``random_stream(seed, name)``
yields the ids a Meteor client stub predicted for a method call with that ``randomSeed``.
"""
from __future__ import annotations

import secrets

__all__ = [
    "UNMISTAKABLE_CHARS", "BASE64_CHARS", "random_id", "random_secret", "Alea",
    "RandomGenerator", "random_stream",
]

UNMISTAKABLE_CHARS = "23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz"
BASE64_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
_HEX_CHARS = "0123456789abcdef"
_TWO_POW_32 = 4294967296.0
_TWO_POW_MINUS_32 = 2.3283064365386963e-10


def random_id(chars: int = 17) -> str:
    """A Meteor ``Random.id()``: ``chars`` characters from the unmistakable alphabet."""
    return "".join(secrets.choice(UNMISTAKABLE_CHARS) for _ in range(chars))


def random_secret(chars: int = 43) -> str:
    """A Meteor ``Random.secret()``: base64url characters, 256 bits by default."""
    return "".join(secrets.choice(BASE64_CHARS) for _ in range(chars))


def _to_uint32(value: float) -> int:
    return int(value) % 4294967296  # JavaScript's ``value >>> 0`` for non-negative values


class _Mash:
    def __init__(self) -> None:
        self.n = 0xEFC8249D

    def __call__(self, data: object) -> float:
        text = data if isinstance(data, str) else _js_string(data)
        n = self.n
        # charCodeAt walks UTF-16 code units.
        units = text.encode("utf-16-le")
        for i in range(0, len(units), 2):
            n += units[i] | (units[i + 1] << 8)
            h = 0.02519603282416938 * n
            n = _to_uint32(h)
            h -= n
            h *= n
            n = _to_uint32(h)
            h -= n
            n += h * _TWO_POW_32
        self.n = n
        return _to_uint32(n) * _TWO_POW_MINUS_32


def _js_string(value: object) -> str:
    """``String(value)`` for the seed types clients send (strings and integers)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class Alea:
    """Johannes Baagøe's Alea PRNG as Meteor ships it (version 0.9)."""

    def __init__(self, *seeds: object) -> None:
        mash = _Mash()
        s0, s1, s2 = mash(" "), mash(" "), mash(" ")
        for seed in seeds:
            s0 -= mash(seed)
            if s0 < 0:
                s0 += 1
            s1 -= mash(seed)
            if s1 < 0:
                s1 += 1
            s2 -= mash(seed)
            if s2 < 0:
                s2 += 1
        self._s0, self._s1, self._s2, self._c = s0, s1, s2, 1

    def __call__(self) -> float:
        t = 2091639 * self._s0 + self._c * _TWO_POW_MINUS_32
        self._s0, self._s1 = self._s1, self._s2
        self._c = int(t)
        self._s2 = t - self._c
        return self._s2


class RandomGenerator:
    """``Random.createWithSeeds(...)``: a reproducible generator with Meteor's helpers."""

    def __init__(self, *seeds: object) -> None:
        self._alea = Alea(*seeds)

    def fraction(self) -> float:
        return self._alea()

    def _string(self, chars: int, alphabet: str) -> str:
        size = len(alphabet)
        return "".join(alphabet[int(self._alea() * size)] for _ in range(chars))

    def id(self, chars: int = 17) -> str:
        return self._string(chars, UNMISTAKABLE_CHARS)

    def secret(self, chars: int = 43) -> str:
        return self._string(chars, BASE64_CHARS)

    def hex_string(self, digits: int) -> str:
        return self._string(digits, _HEX_CHARS)


def random_stream(random_seed: str, name: str) -> RandomGenerator:
    """``DDP.randomStream(name)`` for a method invoked with ``randomSeed``.

    Inserts into collection ``C`` use the name ``"/collection/C"``.
    """
    return RandomGenerator(random_seed, name)
