"""Calling user code (methods, publications) on behalf of a DDP connection.

Inside a method, :func:`current_invocation` gives Meteor's ``this``: the connection,
the ``randomSeed`` streams and (with accounts) the user.  Exceptions are mapped the way
Meteor maps them: a :class:`~ddpctl.ddp.errors.MeteorError` reaches the client as raised,
anything else is logged with its traceback and becomes ``500 Internal server error``.
"""
from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .ddp.errors import MeteorError, internal_server_error
from .ddp.random import RandomGenerator, random_secret, random_stream

__all__ = ["ConnectionHandle", "MethodInvocation", "current_invocation", "call_user_code"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class ConnectionHandle:
    """Meteor's ``connection`` object: who is on the other end of a DDP session."""

    id: str
    client_address: str | None
    http_headers: dict[str, str]
    _close: Callable[[], None] = field(repr=False, default=lambda: None)

    def close(self) -> None:
        """Disconnect this client (it may reconnect)."""
        self._close()


@dataclass
class MethodInvocation:
    """Meteor's ``this`` inside a method."""

    name: str
    connection: ConnectionHandle | None
    random_seed: str | None = None
    user_id: Any = None
    is_simulation: bool = False
    _streams: dict[str, RandomGenerator] = field(default_factory=dict, repr=False)
    user_changed: bool = field(default=False, repr=False)

    def set_user_id(self, user_id: Any) -> None:
        """Meteor's ``this.setUserId``: the connection's user from now on.

        When the method returns, every subscription of the connection runs again as the new
        user and the client receives only the differences.
        """
        self.user_id = user_id
        self.user_changed = True

    def random_stream(self, name: str) -> RandomGenerator:
        """``DDP.randomStream(name)``: reproduces the client stub's ids for ``randomSeed``.

        Without a seed the stream is seeded from the OS (ids are then not predictable).
        """
        stream = self._streams.get(name)
        if stream is None:
            stream = random_stream(self.random_seed or random_secret(), name)
            self._streams[name] = stream
        return stream


_current: contextvars.ContextVar[MethodInvocation | None] = contextvars.ContextVar(
    "ddpctl_invocation", default=None)


def current_invocation() -> MethodInvocation:
    """The method invocation running in this greenlet; ``RuntimeError`` outside a method."""
    invocation = _current.get()
    if invocation is None:
        raise RuntimeError("current_invocation() called outside a DDP method")
    return invocation


def call_user_code(what: str, fn: Callable[..., T], *args: Any,
                   invocation: MethodInvocation | None = None) -> T:
    """Run ``fn(*args)``; let ``MeteorError`` through and turn anything else into a 500."""
    token = _current.set(invocation)
    try:
        return fn(*args)
    except MeteorError:
        raise
    except Exception:
        logger.exception("Exception in %s", what)
        raise internal_server_error() from None
    finally:
        _current.reset(token)
