"""Server methods: registration from ``ddp.py`` modules and invocation.

    from ddpctl.api import method, MeteorError

    @method                      # callable as "add"
    def add(a, b):
        return a + b

    @method("books.rename")      # an explicit name
    def rename(book_id, title): ...

Params arrive positionally (DDP ``params``).  Params that do not fit the signature give
``400 Match failed`` like Meteor's ``check``.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

from django.db import transaction

from .ddp.errors import MeteorError, match_failed
from .invocation import MethodInvocation, call_user_code
from .redaction import SensitiveParams, declare_sensitive, forget_sensitive
from .values import to_ddp_value

__all__ = ["MethodRegistry", "methods", "method"]

F = TypeVar("F", bound=Callable[..., Any])


class MethodRegistry:
    def __init__(self) -> None:
        self._methods: dict[str, Callable[..., Any]] = {}
        self._signatures: dict[str, inspect.Signature] = {}
        self._not_atomic: set[str] = set()

    def register(self, name: str, func: Callable[..., Any], atomic: bool = True,
                 sensitive_params: SensitiveParams = None) -> None:
        """``atomic=False``: the method's writes are not rolled back when it raises (a failed
        login still records what it must, e.g. deleting an expired token).
        ``sensitive_params``: params never logged (:mod:`ddpctl.redaction`)."""
        existing = self._methods.get(name)
        if existing is not None and existing is not func:
            raise ValueError(f"A DDP method named {name!r} is already registered ({existing!r})")
        declare_sensitive("method", name, sensitive_params, func)
        self._methods[name] = func
        self._signatures[name] = inspect.signature(func)
        if atomic:
            self._not_atomic.discard(name)
        else:
            self._not_atomic.add(name)

    def unregister(self, name: str) -> None:
        self._methods.pop(name, None)
        self._signatures.pop(name, None)
        self._not_atomic.discard(name)
        forget_sensitive("method", name)

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def names(self) -> list[str]:
        return sorted(self._methods)

    def invoke(self, name: str, params: list[Any], invocation: MethodInvocation,
               atomic: bool = True) -> Any:
        """Run a method; returns its result as an EJSON-ready value (``to_ddp_value``, the same
        mapping as published fields).  Raises ``MeteorError``: 404, 400, the method's own, or
        500 for any other exception, including a result with no DDP mapping (logged as a
        ``TypeError`` naming the method, the type and where in the result it was)."""
        func = self._methods.get(name)
        if func is None:
            raise MeteorError(404, f"Method '{name}' not found")
        try:
            self._signatures[name].bind(*params)
        except TypeError as exc:
            raise match_failed(f"method {name!r}: {exc}") from None
        where = f"result of method {name!r}"
        # A method that raises (or returns what cannot be sent) leaves no writes behind.
        if atomic and name not in self._not_atomic:
            def run() -> Any:
                with transaction.atomic():
                    return to_ddp_value(func(*params), where)
        else:
            def run() -> Any:
                return to_ddp_value(func(*params), where)
        return call_user_code(f"method {name!r}", run, invocation=invocation)


methods = MethodRegistry()


@overload
def method(name_or_func: F) -> F: ...
@overload
def method(name_or_func: str | None = None, *, atomic: bool = True,
           sensitive_params: SensitiveParams = None) -> Callable[[F], F]: ...


def method(name_or_func: Any = None, *, atomic: bool = True, sensitive_params: SensitiveParams = None) -> Any:
    """Register a function as a DDP method (``@method`` or ``@method("name")``); returns the
    function unchanged.

    Clients call it with ``Meteor.call(name, ...params)``: the DDP ``params`` arrive
    positionally, and params that do not fit the signature give ``400 Match failed``.  The
    return value is sent converted by :func:`ddpctl.values.to_ddp_value` (the same mapping as
    published fields).  A :class:`~ddpctl.ddp.errors.MeteorError` raised reaches the client as
    is; any other exception (or a result with no DDP mapping) gives ``500 Internal server
    error``, its traceback logged.  The method runs in a transaction (``atomic=True``): if it
    raises, its writes are undone.  Inside it, :func:`~ddpctl.invocation.current_invocation`
    is Meteor's ``this``.  ``ValueError`` if another function already has this name.
    ``sensitive_params``: ``True``, or the positions (``int``) and names (``str``: the
    function's parameters, and dict keys at any depth) of params never written to a log;
    parameters and keys that look secret (``password``, ``token``...) never are either
    (:mod:`ddpctl.redaction`).
    """
    if callable(name_or_func):
        methods.register(name_or_func.__name__, name_or_func)
        return name_or_func

    def decorate(func: F) -> F:
        methods.register(name_or_func or func.__name__, func, atomic=atomic,
                         sensitive_params=sensitive_params)
        return func

    return decorate
