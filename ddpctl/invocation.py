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
    """Meteor's ``connection`` object: who is on the other end of a DDP session.

    ``id`` is the DDP session id (empty until the client's ``connect``);
    ``http_headers`` the upgrade request's headers, lower-case names (``"user-agent"``).
    ``data`` is this connection's own storage, a plain ``dict`` that lives as long as the
    connection: fill it from an :func:`~ddpctl.connection_hooks.on_connection` hook, read it
    in methods (``current_invocation().connection.data``) and publications
    (``self.subscription.connection.data``).  Only this server process sees it.
    """

    id: str
    client_address: str | None
    http_headers: dict[str, str]
    _close: Callable[[], None] = field(repr=False, default=lambda: None)
    data: dict[str, Any] = field(default_factory=dict, repr=False)
    _close_callbacks: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        """Disconnect this client (it may reconnect)."""
        self._close()

    @property
    def closed(self) -> bool:
        """True once the connection has ended (its ``on_close`` callbacks have run)."""
        return self._closed

    def on_close(self, callback: Callable[[], None]) -> None:
        """Meteor's ``connection.onClose``: call ``callback()`` once when the connection ends,
        whatever ends it (the client, a timeout, ``ddpctl conns close``, server shutdown).

        Callbacks run in registration order on the connection's own greenlet, with a
        database connection from the user lane; an exception is logged with its traceback
        and the next callback runs.  On a connection that has already ended, ``callback``
        runs at once.
        """
        if self._closed:
            _run_close_callback(self, callback)
        else:
            self._close_callbacks.append(callback)

    def run_close_callbacks(self) -> None:
        """Mark the connection ended and run its ``on_close`` callbacks (once; the server
        calls it)."""
        self._closed = True
        while self._close_callbacks:
            _run_close_callback(self, self._close_callbacks.pop(0))


def _run_close_callback(handle: ConnectionHandle, callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        logger.exception("Exception in on_close callback %r of connection %s", callback, handle.id)


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
