"""The rule engine of Meteor's ``rate-limit`` package: count events, refuse the ones past a limit.

Pure logic: no I/O, no Django, no gevent; time comes from a ``clock`` returning integer
milliseconds, so tests drive it with a fake one.

An :class:`Event` is one method call or subscription attempt.  A rule has a *matcher* --
for each of the five event fields (:data:`MATCHER_KEYS`) a literal, a predicate (a
callable taking the field's value and returning a bool) or ``None``/absent (any value) --
and a limit of ``num_requests`` events per ``time_interval`` milliseconds.  Exactly as in
Meteor (``packages/rate-limit/rate-limit.js``):

* an event matches a rule when every literal equals the event's field and every predicate
  returns true for it;
* each matching event is counted in the rule's counter for its *key*: the event's values
  of the fields the matcher names (``None`` matchers excluded) -- so ``{"name": "login",
  "connection_id": lambda c: True}`` counts each connection separately;
* counters are incremented *before* the check, so the ``num_requests + 1``-th event of a
  window is the first one refused, and refused events count too;
* windows are fixed per rule: they start when the rule is added, and the first matching
  event more than ``time_interval`` ms after the window's start clears all the rule's
  counters and starts the next window;
* the reply of :meth:`RateLimiter.hit` aggregates the matching rules in the order they
  were added: refused if any rule is past its limit; ``time_to_reset`` is the longest wait
  among the refusing rules (or, if none refuses, the wait of the rule with the fewest
  invocations left); ``num_invocations_left`` is the fewest left.

Differences from Meteor, none visible through the DDP rejection:

* a predicate is called once per rule and event (Meteor calls it up to four times);
* counter keys are tuples of the values, not their string concatenation (so user ids
  ``1`` and ``"1"`` are different keys);
* memory is bounded: a rule keeps at most ``max_keys`` counters.  When a new key arrives
  and the rule is full, the counter with the smallest count (the oldest of those) is
  dropped, so a flood of distinct client addresses or connections cannot grow memory, and
  dropping a counter can only forget calls of the least active key; counters of a rule
  whose window has passed are dropped at the next event of any rule.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_MAX_KEYS", "DEFAULT_NUM_REQUESTS", "DEFAULT_TIME_INTERVAL", "MATCHER_KEYS", "Event",
    "Matcher", "RateLimiter", "Reply", "Rule",
]

logger = logging.getLogger(__name__)

MATCHER_KEYS = ("type", "name", "user_id", "connection_id", "client_address")
DEFAULT_NUM_REQUESTS = 10  # events per window (Meteor's DEFAULT_REQUESTS_PER_INTERVAL)
DEFAULT_TIME_INTERVAL = 1000  # ms (Meteor's DEFAULT_INTERVAL_TIME_IN_MILLISECONDS)
DEFAULT_MAX_KEYS = 10_000  # counters one rule keeps at most

Matcher = Any  # a literal, a ``Callable[[Any], bool]``, or ``None`` (any value)


@dataclass(frozen=True, slots=True)
class Event:
    """One attempt (Meteor's ``rateLimiterInput``).

    ``type``: ``"method"`` or ``"subscription"``; ``name``: the method's or publication's
    name; ``user_id``: the connection's user (``None`` when logged out);
    ``connection_id``: the DDP session id; ``client_address``: the client's IP address
    (``None`` if unknown).
    """

    type: str
    name: str
    user_id: Any = None
    connection_id: str | None = None
    client_address: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """The verdict on one event (Meteor's ``check`` result).

    ``allowed``: whether it may run; ``time_to_reset``: milliseconds until the counters
    that matter are cleared (0 when no rule matched); ``num_invocations_left``: events
    still allowed in this window by the strictest matching rule (``math.inf`` when no rule
    matched, 0 when refused).
    """

    allowed: bool
    time_to_reset: int
    num_invocations_left: float


_UNLIMITED = Reply(True, 0, math.inf)


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return ("<unhashable>", type(value).__name__, repr(value))
    return value


class _Counters:
    """Counts per key, at most ``max_keys`` of them; when full, the smallest count goes.

    Counts only grow, so the keys are kept in buckets by count (each bucket in insertion
    order) and the smallest non-empty bucket is known: every operation is O(1).
    """

    __slots__ = ("counts", "buckets", "min_count", "max_keys", "evicted", "warned")

    def __init__(self, max_keys: int) -> None:
        self.counts: dict[Any, int] = {}
        self.buckets: dict[int, dict[Any, None]] = {}
        self.min_count = 0
        self.max_keys = max_keys
        self.evicted = 0  # counters dropped since the last clear
        self.warned = False  # whether that was logged

    def __len__(self) -> int:
        return len(self.counts)

    def get(self, key: Any) -> int:
        return self.counts.get(key, 0)

    def increment(self, key: Any) -> int:
        """Count one more event for ``key``; its new count."""
        count = self.counts.get(key)
        if count is None:
            if len(self.counts) >= self.max_keys:
                self._evict()
            self.counts[key] = 1
            self.buckets.setdefault(1, {})[key] = None
            self.min_count = 1
            return 1
        bucket = self.buckets[count]
        del bucket[key]
        if not bucket:
            del self.buckets[count]
            if self.min_count == count:
                self.min_count = count + 1
        count += 1
        self.counts[key] = count
        self.buckets.setdefault(count, {})[key] = None
        return count

    def _evict(self) -> None:
        bucket = self.buckets[self.min_count]
        victim = next(iter(bucket))
        del bucket[victim]
        if not bucket:
            del self.buckets[self.min_count]
        del self.counts[victim]
        self.evicted += 1

    def clear(self) -> None:
        self.counts.clear()
        self.buckets.clear()
        self.min_count = 0
        self.evicted = 0
        self.warned = False


class Rule:
    """One ``add_rule``: a matcher, a limit and its counters."""

    def __init__(self, rule_id: str, matcher: Mapping[str, Matcher], num_requests: int,
                 time_interval: int, now: int, max_keys: int) -> None:
        self.id = rule_id
        self.matcher = dict(matcher)
        self.num_requests = num_requests
        self.time_interval = time_interval
        self.last_reset = now
        self.counters = _Counters(max_keys)
        # The fields that select and key events, in the matcher's order (None = any: skipped).
        self._tests = [(key, value) for key, value in self.matcher.items() if value is not None]

    def key_for(self, event: Event) -> tuple[Any, ...] | None:
        """The counter key of ``event``, or ``None`` if the rule does not match it.

        Calls each predicate once; a predicate's exception propagates.
        """
        values = []
        for key, test in self._tests:
            value = getattr(event, key)
            if callable(test):
                if not test(value):
                    return None
            elif test != value:
                return None
            values.append(_hashable(value))
        return tuple(values)

    def expired(self, now: int) -> bool:
        """Whether the current window is over (Meteor: more than ``time_interval`` ms old)."""
        return now - self.last_reset > self.time_interval

    def describe(self) -> dict[str, Any]:
        """The rule as plain data (predicates by their ``repr``)."""
        matcher = {k: repr(v) if callable(v) else v for k, v in self.matcher.items()}
        return {"id": self.id, "matcher": matcher,
                "num_requests": self.num_requests, "time_interval": self.time_interval,
                "counters": len(self.counters)}


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, not {value!r}")
    return value


def validate_matcher(matcher: Mapping[str, Matcher] | None) -> dict[str, Matcher]:
    """``matcher`` checked and copied; ``ValueError`` for a key outside :data:`MATCHER_KEYS`.

    (Meteor accepts any key and such a rule then never matches; ddpctl refuses it.)
    """
    if matcher is None:
        return {}
    if not isinstance(matcher, Mapping):
        raise ValueError(f"a rate limit matcher must be a dict, not {type(matcher).__name__}")
    unknown = [key for key in matcher if key not in MATCHER_KEYS]
    if unknown:
        hint = {"userId": "user_id", "connectionId": "connection_id", "clientAddress": "client_address"}
        names = ", ".join(f"{k!r}" + (f" (use {hint[k]!r})" if k in hint else "") for k in unknown)
        raise ValueError(f"unknown rate limit matcher key {names}; the keys are {', '.join(MATCHER_KEYS)}")
    return dict(matcher)


class RateLimiter:
    """Rules and their counters (Meteor's ``RateLimiter``).

    ``clock``: returns the time in integer milliseconds (any origin, never going back);
    ``max_keys``: counters kept per rule at most (see the module docstring);
    ``id_factory``: returns a fresh rule id.
    """

    def __init__(self, clock: Callable[[], int], *, max_keys: int = DEFAULT_MAX_KEYS,
                 id_factory: Callable[[], str] | None = None) -> None:
        self.clock = clock
        self.max_keys = _positive_int(max_keys, "max_keys")
        self._rules: dict[str, Rule] = {}
        self._next_id = 0
        self._id_factory = id_factory

    def add_rule(self, matcher: Mapping[str, Matcher] | None = None,
                 num_requests: int = DEFAULT_NUM_REQUESTS,
                 time_interval: int = DEFAULT_TIME_INTERVAL) -> str:
        """Add a rule; its id (for :meth:`remove_rule`).

        ``matcher``: field name (:data:`MATCHER_KEYS`) -> literal, predicate or ``None``;
        ``num_requests``: events allowed per window; ``time_interval``: the window, in ms.
        ``ValueError`` for an unknown key or a limit that is not a positive integer
        (Meteor would silently use its defaults for 0).
        """
        checked = validate_matcher(matcher)
        num_requests = _positive_int(num_requests, "num_requests")
        time_interval = _positive_int(time_interval, "time_interval")
        if self._id_factory is not None:
            rule_id = self._id_factory()
        else:
            self._next_id += 1
            rule_id = str(self._next_id)
        self._rules[rule_id] = Rule(rule_id, checked, num_requests, time_interval, self.clock(),
                                    self.max_keys)
        return rule_id

    def remove_rule(self, rule_id: str) -> bool:
        """Remove a rule and its counters (and so any limit it imposes); whether it existed."""
        return self._rules.pop(rule_id, None) is not None

    def rules(self) -> list[Rule]:
        """The rules, in the order they were added."""
        return list(self._rules.values())

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules())

    def hit(self, event: Event) -> Reply:
        """Count ``event`` in every rule it matches, then tell whether it may run.

        A predicate's exception propagates (rules before it have counted the event).
        """
        now = self.clock()
        reply_allowed = True
        time_to_reset = 0
        left: float = math.inf
        matched = False
        for rule in self.rules():
            if rule.expired(now) and len(rule.counters):
                rule.counters.clear()  # idle counters go; the window itself restarts below
            key = rule.key_for(event)
            if key is None:
                continue
            matched = True
            if rule.expired(now):
                rule.counters.clear()
                rule.last_reset = now
            count = rule.counters.increment(key)
            if rule.counters.evicted and not rule.counters.warned:  # once per window
                rule.counters.warned = True
                logger.warning("rate limit rule %s: more than %d counters in one window; the smallest "
                               "are dropped", rule.id, rule.counters.max_keys)
            time_to_next_reset = rule.time_interval - (now - rule.last_reset)
            if count > rule.num_requests:
                if time_to_reset < time_to_next_reset:
                    time_to_reset = time_to_next_reset
                reply_allowed = False
                left = 0
            elif rule.num_requests - count < left and reply_allowed:
                time_to_reset = time_to_next_reset
                left = rule.num_requests - count
        if not matched:
            return _UNLIMITED
        return Reply(reply_allowed, time_to_reset, left)
