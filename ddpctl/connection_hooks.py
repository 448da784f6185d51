"""Connection hooks: Meteor's ``Meteor.onConnection``.

    from ddpctl.api import on_connection

    @on_connection
    def track(connection):
        connection.data["opened"] = time.time()          # per-connection storage
        Visit.objects.create(session=connection.id)      # the ORM works here
        connection.on_close(lambda: Visit.objects.filter(session=connection.id).delete())

A hook receives the :class:`~ddpctl.invocation.ConnectionHandle` of every new DDP
connection once its client has sent ``connect`` (Meteor's order: after ``connected`` is
sent, before any later message of the client is processed).  Hooks run one after the other
on the connection's own greenlet, with a database connection from the user lane, like a
method; an exception is logged with its traceback and the next hook runs: the connection
lives on.  Hooks are per process: register them at import time (in ``ddp.py``).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .invocation import ConnectionHandle

__all__ = ["ConnectionHook", "on_connection", "connection_hooks"]

logger = logging.getLogger(__name__)

HookFunction = Callable[[ConnectionHandle], Any]


class ConnectionHook:
    """What :func:`on_connection` returns: the hook itself (still callable, so the decorated
    name keeps working) with Meteor's ``stop()`` to unregister it."""

    def __init__(self, registry: ConnectionHooks, callback: HookFunction) -> None:
        self._registry = registry
        self.callback = callback

    def __call__(self, connection: ConnectionHandle) -> Any:
        return self.callback(connection)

    def stop(self) -> None:
        """No later connection calls this hook (idempotent)."""
        self._registry.remove(self)

    def __repr__(self) -> str:
        return f"<ConnectionHook {getattr(self.callback, '__qualname__', self.callback)!r}>"


class ConnectionHooks:
    """The process's ``on_connection`` hooks, in registration order."""

    def __init__(self) -> None:
        self._hooks: list[ConnectionHook] = []

    def __bool__(self) -> bool:
        return bool(self._hooks)

    def add(self, callback: HookFunction) -> ConnectionHook:
        if not callable(callback):
            raise TypeError(f"on_connection needs a callable, not {callback!r}")
        hook = ConnectionHook(self, callback)
        self._hooks.append(hook)
        return hook

    def remove(self, hook: ConnectionHook) -> None:
        if hook in self._hooks:
            self._hooks.remove(hook)

    def run(self, connection: ConnectionHandle) -> None:
        """Call every hook with ``connection``; log (never raise) what a hook raises."""
        for hook in list(self._hooks):
            try:
                hook.callback(connection)
            except Exception:
                logger.exception("Exception in on_connection hook %r (connection %s)",
                                 hook.callback, connection.id)


connection_hooks = ConnectionHooks()


def on_connection(callback: HookFunction) -> ConnectionHook:
    """Register ``callback(connection)`` for every new DDP connection (Meteor's
    ``Meteor.onConnection``); usable as a decorator.  Returns a :class:`ConnectionHook`
    whose ``stop()`` unregisters it.  ``TypeError`` if ``callback`` is not callable."""
    return connection_hooks.add(callback)
