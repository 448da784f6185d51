"""Meteor's ``DDPRateLimiter``: the process's rate limit rules, checked before every method
call and subscription.

``rate_limit`` (also ``ddpctl.api.rate_limit``) holds the rules of this process: the
rules of ``DDPCTL_RATE_LIMITS``, Meteor's default rule (``DDPCTL_RATE_LIMIT_DEFAULT_RULE``)
and what ``ddp.py`` modules add::

    from ddpctl.api import rate_limit, one_of, each

    rule_id = rate_limit.add_rule({"type": "method", "name": "messages.send",
                                   "user_id": each}, num_requests=5, time_interval=1000)
    rate_limit.remove_rule(rule_id)

A refused call gets Meteor's error, ``too-many-requests`` with ``details.timeToReset``
(ms): a method in its ``result``, a subscription in its ``nosub``; the method or
publication does not run.  Counters live in the process: each ``ddpctl serve`` process
(each of ``--workers``) counts its own, like each Meteor server process.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..ddp.errors import MeteorError
from ..invocation import call_user_code
from .config import (
    DEFAULT_RULE_METHODS,
    DEFAULT_RULE_NUM_REQUESTS,
    DEFAULT_RULE_TIME_INTERVAL,
    RateLimitSettings,
    read_settings,
)
from .engine import DEFAULT_NUM_REQUESTS, DEFAULT_TIME_INTERVAL, Event, RateLimiter, Reply
from .matchers import each, normalize_matcher, one_of

__all__ = ["DDPRateLimiter", "default_error_message", "monotonic_ms", "rate_limit"]

logger = logging.getLogger(__name__)


def monotonic_ms() -> int:
    """Milliseconds of a clock that never goes back (the limiter's clock)."""
    return int(time.monotonic() * 1000)


def default_error_message(reply: Reply) -> str:
    """Meteor's reason for a refusal: the wait rounded up to whole seconds."""
    seconds = math.ceil(reply.time_to_reset / 1000)
    return f"Error, too many requests. Please slow down. You must wait {seconds} seconds before trying again."


class DDPRateLimiter:
    """The rules checked before methods and subscriptions run.

    Reads its settings on first use (or :meth:`configure`); ``settings`` replaces Django's
    settings object (tests), ``clock`` the millisecond clock.
    """

    def __init__(self, *, clock: Callable[[], int] = monotonic_ms, settings: Any = None) -> None:
        self._clock = clock
        self._settings = settings
        self._limiter: RateLimiter | None = None
        self._message: str | Callable[[Reply], str] = default_error_message
        self.default_rule_id: str | None = None

    # -- configuration --------------------------------------------------------------------

    def configure(self) -> None:
        """Read the settings and add their rules, once.  ``ValueError`` if they are malformed."""
        if self._limiter is not None:
            return
        config: RateLimitSettings = read_settings(self._settings)
        limiter = RateLimiter(self._clock, max_keys=config.max_keys)
        for spec in config.rules:
            limiter.add_rule(spec.matcher, spec.num_requests, spec.time_interval)
        self._limiter = limiter
        if config.default_rule is not None:
            self.add_default_rule(*config.default_rule)

    @property
    def limiter(self) -> RateLimiter:
        """The rule engine (configured from the settings on first access)."""
        if self._limiter is None:
            self.configure()
        assert self._limiter is not None
        return self._limiter

    def add_rule(self, matcher: Mapping[str, Any] | None = None, num_requests: int = DEFAULT_NUM_REQUESTS,
                 time_interval: int = DEFAULT_TIME_INTERVAL) -> str:
        """Meteor's ``DDPRateLimiter.addRule``: count matching events, refuse those past
        ``num_requests`` per ``time_interval`` ms; returns the rule's id.

        ``matcher`` maps ``type`` (``"method"``/``"subscription"``), ``name``, ``user_id``,
        ``connection_id`` and ``client_address`` to a literal, a predicate or ``None``
        (:mod:`ddpctl.ratelimit.matchers`); events are counted separately for each
        combination of the values of the keys given.  ``ValueError`` for an unknown key, a
        malformed value or a limit that is not a positive integer.
        """
        return self.limiter.add_rule(normalize_matcher(matcher), num_requests, time_interval)

    def remove_rule(self, rule_id: str) -> bool:
        """Meteor's ``DDPRateLimiter.removeRule``: whether a rule with this id was removed."""
        removed = self.limiter.remove_rule(rule_id)
        if removed and rule_id == self.default_rule_id:
            self.default_rule_id = None
        return removed

    def add_default_rule(self, num_requests: int = DEFAULT_RULE_NUM_REQUESTS,
                         time_interval: int = DEFAULT_RULE_TIME_INTERVAL) -> str:
        """Meteor's ``Accounts.addDefaultRateLimit``: ``login``, ``createUser``,
        ``resetPassword`` and ``forgotPassword`` limited to ``num_requests`` calls per
        ``time_interval`` ms per connection and method, for logged-out and logged-in
        callers alike.  Replaces the previous default rule; returns its id."""
        self.remove_default_rule()
        self.default_rule_id = self.limiter.add_rule(
            {"user_id": None, "client_address": None, "type": "method",
             "name": one_of(*DEFAULT_RULE_METHODS), "connection_id": each},
            num_requests, time_interval)
        return self.default_rule_id

    def remove_default_rule(self) -> bool:
        """Meteor's ``Accounts.removeDefaultRateLimit``: whether there was one."""
        if self.default_rule_id is None:
            return False
        return self.remove_rule(self.default_rule_id)

    def rules(self) -> list[dict[str, Any]]:
        """Meteor's ``printRules``: each rule as ``{id, matcher, num_requests, time_interval,
        counters}`` (predicates by their repr, ``counters`` = keys counted in this window)."""
        return [rule.describe() for rule in self.limiter.rules()]

    def set_error_message(self, message: str | Callable[[Reply], str]) -> None:
        """Meteor's ``setErrorMessage``: the refusal's reason, or a function of the
        :class:`~ddpctl.ratelimit.engine.Reply` (``time_to_reset`` in ms) returning it."""
        self._message = message

    def error_message(self, reply: Reply) -> str:
        message = self._message
        return message(reply) if callable(message) else message

    # -- checking -------------------------------------------------------------------------

    def hit(self, event: Event) -> Reply:
        """Count ``event`` and judge it (predicates' exceptions propagate)."""
        return self.limiter.hit(event)

    def refusal(self, event: Event) -> MeteorError | None:
        """Count ``event``; the error to answer it with, or ``None`` if it may run.

        A predicate that raises is a bug: it is logged with its traceback and the call is
        refused with ``500 Internal server error`` (a ``MeteorError`` it raises is sent as is).
        """
        try:
            reply = call_user_code(f"rate limit rules for {event.type} {event.name!r}", self.hit, event)
            if reply.allowed:
                return None
            reason = call_user_code("rate limit error message", self.error_message, reply)
        except MeteorError as exc:
            return exc
        return MeteorError("too-many-requests", reason, {"timeToReset": reply.time_to_reset})


rate_limit = DDPRateLimiter()
