"""Matcher values of rate limit rules: literals, predicates and the forms settings can spell.

A matcher value is what a rule requires of one event field:

* ``None`` (or the key absent): any value, and the field does not split the counters;
* a literal (``"login"``, ``"method"``, a user id): the field must equal it;
* a callable: a predicate, ``True`` to match (and then each value has its own counter);
* a dict with one key, the forms Django settings can hold:
  ``{"in": [v1, v2, ...]}`` (one of these values, see :func:`one_of`),
  ``{"each": True}`` (any value, each counted separately, see :func:`each`),
  ``{"predicate": "dotted.path.to.function"}`` (imported once, when the rule is added).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.utils.module_loading import import_string

from .engine import Matcher, validate_matcher

__all__ = ["each", "normalize_matcher", "one_of", "OneOf"]


def each(value: Any) -> bool:
    """Matches any value, each one counted separately (Meteor's ``() => true`` idiom)."""
    return True


class OneOf:
    """A predicate: the value is one of ``values`` (each value counted separately)."""

    def __init__(self, values: Iterable[Any]) -> None:
        self.values = tuple(values)

    def __call__(self, value: Any) -> bool:
        return value in self.values

    def __repr__(self) -> str:
        return f"one_of{self.values!r}"


def one_of(*values: Any) -> OneOf:
    """A predicate matching any of ``values``: ``{"name": one_of("login", "createUser")}``."""
    return OneOf(values)


def _value(key: str, value: Any) -> Matcher:
    if not isinstance(value, Mapping):
        return value
    if len(value) != 1:
        raise ValueError(f"matcher {key!r}: a dict value needs exactly one of 'in', 'each', 'predicate', "
                         f"not {sorted(value)!r}")
    (form, arg), = value.items()
    if form == "in":
        if isinstance(arg, str | bytes) or not isinstance(arg, Iterable):
            raise ValueError(f"matcher {key!r}: 'in' needs a list of values, not {arg!r}")
        return OneOf(arg)
    if form == "each":
        if arg is not True:
            raise ValueError(f"matcher {key!r}: write {{'each': True}}, not {{'each': {arg!r}}}")
        return each
    if form == "predicate":
        if not isinstance(arg, str):
            raise ValueError(f"matcher {key!r}: 'predicate' needs a dotted path, not {arg!r}")
        try:
            predicate: Callable[[Any], bool] = import_string(arg)
        except ImportError as exc:
            raise ValueError(f"matcher {key!r}: cannot import predicate {arg!r}: {exc}") from None
        if not callable(predicate):
            raise ValueError(f"matcher {key!r}: {arg!r} is not callable")
        return predicate
    raise ValueError(f"matcher {key!r}: unknown form {form!r} (use 'in', 'each' or 'predicate')")


def normalize_matcher(matcher: Mapping[str, Any] | None) -> dict[str, Matcher]:
    """``matcher`` with its dict forms turned into predicates; ``ValueError`` if malformed."""
    checked = validate_matcher(matcher)
    return {key: _value(key, value) for key, value in checked.items()}
