"""Which subscribers may share an observer.

An observer computes its documents once for all its subscribers, so two subscriptions may
share one only when the result cannot differ between them (design requirement 4).  The
observer key is ``(publication name, params as EJSON text, scope)``; the scope comes from
what the publication read of its subscriber while it built its queries:

* only its params (and ``subscription.params`` / ``subscription.name``, which the key holds
  already): ``("everyone",)``, shared by every subscriber with these params;
* the user -- ``self.user``, ``self.user_id``, ``self.subscription.user_id`` -- or a
  Collection that overrides ``visible``: ``("user", user_id)``, one observer per user;
* anything else of its subscription -- ``self.subscription.connection`` (HTTP headers,
  cookies, client address, connection id), ``self.subscription.id``, its methods, ...:
  ``("private", n)``, an observer of its own.

A publication may declare its scope instead with ``sharing_key(*params)``: the value it
returns joins the key (``("key", value)``, or ``("key", value, "user", user_id)`` if the
queries read the user too), and :data:`PRIVATE` makes the observer private.  What ddpctl
cannot see -- module globals, thread-locals, the clock, a cache -- needs such a
declaration.
"""
from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .publish import Subscription

__all__ = ["PRIVATE", "UNDECLARED", "Reads", "TrackedSubscription", "Sharing", "decide"]


class _Marker:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


PRIVATE: Any = _Marker("PRIVATE")
"""Returned by ``Publication.sharing_key``: each subscription gets an observer of its own."""

UNDECLARED: Any = _Marker("UNDECLARED")
"""The publication declares no sharing key: the scope follows what it read."""

# Attributes of a Subscription that the observer key already holds.
_IN_KEY = frozenset({"params", "name"})
_USER = "user_id"
_private_tokens = itertools.count(1)


@dataclass
class Reads:
    """What a publication read of its subscriber: attribute paths such as
    ``"subscription.user_id"`` (the user) and ``"subscription.connection"`` (the rest)."""

    user: set[str] = field(default_factory=set)
    private: set[str] = field(default_factory=set)

    def clear(self) -> None:
        self.user.clear()
        self.private.clear()


class TrackedSubscription:
    """A :class:`~ddpctl.livedata.publish.Subscription` as a publication sees it
    (``self.subscription``): every attribute works as on the subscription, and each read
    (or write) is recorded in :class:`Reads` for :func:`decide`."""

    __slots__ = ("_target", "_reads")

    def __init__(self, subscription: Subscription, reads: Reads) -> None:
        object.__setattr__(self, "_target", subscription)
        object.__setattr__(self, "_reads", reads)

    def __getattr__(self, name: str) -> Any:
        reads: Reads = object.__getattribute__(self, "_reads")
        if name == _USER:
            reads.user.add(f"subscription.{name}")
        elif name not in _IN_KEY:
            reads.private.add(f"subscription.{name}")
        return getattr(object.__getattribute__(self, "_target"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__getattribute__(self, "_reads").private.add(f"subscription.{name}")
        setattr(object.__getattribute__(self, "_target"), name, value)

    def __repr__(self) -> str:
        return f"<tracked {object.__getattribute__(self, '_target')!r}>"


@dataclass(frozen=True)
class Sharing:
    """The last part of an observer key, and why (for the debug log)."""

    scope: tuple[Hashable, ...]
    reason: str


def decide(reads: Reads, user_id: Any, *, visible_per_user: Iterable[str] = (),
           declared: Any = UNDECLARED) -> Sharing:
    """Which subscribers may share this subscription's observer.

    ``reads``: what ``get_queries`` read of the subscriber; ``user_id``: the subscriber's
    user (``None`` when logged out); ``visible_per_user``: names of the published
    Collections that override ``visible``; ``declared``: what ``sharing_key`` returned, or
    :data:`UNDECLARED`.  ``TypeError`` if the declared key is not hashable.
    """
    per_user = sorted(reads.user) + [f"{name}.visible" for name in sorted(set(visible_per_user))]
    if declared is PRIVATE:
        return Sharing(("private", next(_private_tokens)), "sharing_key() returned PRIVATE")
    if declared is not UNDECLARED:
        try:
            hash(declared)
        except TypeError:
            raise TypeError(f"sharing_key() must return a hashable value, not {declared!r}") from None
        reason = f"sharing_key() returned {declared!r}"
        if reads.private:
            reason += f" (declared to cover {', '.join(sorted(reads.private))})"
        if per_user:
            return Sharing(("key", declared, "user", user_id), f"{reason}; per user: {', '.join(per_user)}")
        return Sharing(("key", declared), reason)
    if reads.private:
        return Sharing(("private", next(_private_tokens)),
                       f"private: reads {', '.join(sorted(reads.private))}")
    if per_user:
        return Sharing(("user", user_id), f"per user: {', '.join(per_user)}")
    return Sharing(("everyone",), "shared: reads only its params")
