"""The rate limit Django settings, read and checked (system check ``ddpctl.E010``).

* ``DDPCTL_RATE_LIMITS``: a list of rules, each a dict of matcher keys (``type``, ``name``,
  ``user_id``, ``connection_id``, ``client_address``; values as in
  :mod:`ddpctl.ratelimit.matchers`) plus ``num_requests`` (default 10) and
  ``time_interval`` (ms, default 1000).
* ``DDPCTL_RATE_LIMIT_DEFAULT_RULE``: Meteor's rule for ``login``, ``createUser``,
  ``resetPassword`` and ``forgotPassword``: ``True`` (the default: 5 calls per 10 000 ms
  per connection and method), ``False``/``None`` (no such rule), or a dict
  ``{"num_requests": N, "time_interval": MS}`` to change its numbers.
* ``DDPCTL_RATE_LIMIT_MAX_KEYS``: counters one rule keeps at most (default 10 000).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .engine import DEFAULT_MAX_KEYS, DEFAULT_NUM_REQUESTS, DEFAULT_TIME_INTERVAL, Matcher
from .matchers import normalize_matcher

__all__ = ["DEFAULT_RULE_METHODS", "DEFAULT_RULE_NUM_REQUESTS", "DEFAULT_RULE_TIME_INTERVAL", "RuleSpec",
           "RateLimitSettings", "read_settings"]

DEFAULT_RULE_METHODS = ("login", "createUser", "resetPassword", "forgotPassword")
DEFAULT_RULE_NUM_REQUESTS = 5
DEFAULT_RULE_TIME_INTERVAL = 10_000  # ms
_LIMIT_KEYS = ("num_requests", "time_interval")


@dataclass(frozen=True)
class RuleSpec:
    """A rule to add: ``matcher`` (normalized), ``num_requests``, ``time_interval`` (ms)."""

    matcher: dict[str, Matcher]
    num_requests: int = DEFAULT_NUM_REQUESTS
    time_interval: int = DEFAULT_TIME_INTERVAL


@dataclass(frozen=True)
class RateLimitSettings:
    """The settings, checked: the rules in order, the default rule's limits (or ``None``), the cap."""

    rules: list[RuleSpec]
    default_rule: tuple[int, int] | None
    max_keys: int


def _limit(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, not {value!r}")
    return value


def _rule(index: int, entry: Any) -> RuleSpec:
    where = f"DDPCTL_RATE_LIMITS[{index}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a dict, not {type(entry).__name__}")
    matcher = {k: v for k, v in entry.items() if k not in _LIMIT_KEYS}
    try:
        normalized = normalize_matcher(matcher)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return RuleSpec(normalized,
                    _limit(entry.get("num_requests", DEFAULT_NUM_REQUESTS), f"{where}['num_requests']"),
                    _limit(entry.get("time_interval", DEFAULT_TIME_INTERVAL), f"{where}['time_interval']"))


def _default_rule(value: Any) -> tuple[int, int] | None:
    if value is True:
        return DEFAULT_RULE_NUM_REQUESTS, DEFAULT_RULE_TIME_INTERVAL
    if value is False or value is None:
        return None
    what = "DDPCTL_RATE_LIMIT_DEFAULT_RULE"
    if not isinstance(value, dict) or set(value) - set(_LIMIT_KEYS):
        raise ValueError(f"{what} must be True, False or a dict with 'num_requests' and/or "
                         f"'time_interval', not {value!r}")
    return (_limit(value.get("num_requests", DEFAULT_RULE_NUM_REQUESTS), f"{what}['num_requests']"),
            _limit(value.get("time_interval", DEFAULT_RULE_TIME_INTERVAL), f"{what}['time_interval']"))


def read_settings(settings: Any = None) -> RateLimitSettings:
    """The rate limit settings of ``settings`` (Django's by default).

    Raises ``ValueError`` naming the setting for anything malformed (an unknown matcher
    key, a predicate path that does not import, a limit that is not a positive integer).
    """
    if settings is None:
        from django.conf import settings
    entries = getattr(settings, "DDPCTL_RATE_LIMITS", None) or []
    if not isinstance(entries, list | tuple):
        raise ValueError(f"DDPCTL_RATE_LIMITS must be a list of dicts, not {type(entries).__name__}")
    rules = [_rule(i, entry) for i, entry in enumerate(entries)]
    default_rule = _default_rule(getattr(settings, "DDPCTL_RATE_LIMIT_DEFAULT_RULE", True))
    max_keys = _limit(getattr(settings, "DDPCTL_RATE_LIMIT_MAX_KEYS", DEFAULT_MAX_KEYS),
                      "DDPCTL_RATE_LIMIT_MAX_KEYS")
    return RateLimitSettings(rules, default_rule, max_keys)
