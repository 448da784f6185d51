"""Publications over Django models.

    class AllBooks(Publication):
        queries = [Book.objects.all(), Author.objects.all()]

    class BooksByAuthorEmail(Publication):
        def get_queries(self, email):
            return [Book.objects.filter(author__email=email)]

    class TenantBooks(Publication):
        def sharing_key(self):              # one observer per tenant
            return self.subscription.connection.http_headers.get("host")

        def get_queries(self):
            return [Book.objects.filter(tenant__host=self.subscription.connection.http_headers.get("host"))]

Defining the class registers it under its class name (or ``name``).  ``get_queries``
receives the subscription's params and may use ``self.user`` / ``self.user_id`` (the
connection's user) and ``self.subscription`` (its connection, headers, client address...).
Subscribers share one observer only when the result cannot differ between them: ddpctl
records what the publication reads of its subscriber (see :mod:`.sharing`), or the
publication declares ``sharing_key``.  An item may be ``(queryset, "collection name")`` to
publish through a specific collection.  Bad params give ``400 Match failed``; an exception
gives ``nosub`` with ``500 Internal server error`` (and a logged traceback).
"""
from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Hashable
from typing import Any, ClassVar

from django.db.models import QuerySet

from ..ddp.ejson import to_json_value
from ..ddp.errors import match_failed
from ..redaction import declare_sensitive
from .collection import Collection, collections
from .observer import Cursor, observers
from .publish import Subscription, publications
from .sharing import PRIVATE, UNDECLARED, Reads, TrackedSubscription, decide

__all__ = ["Publication", "static_querysets"]

_classes: dict[str, type[Publication]] = {}

logger = logging.getLogger(__name__)


class Publication:
    """A publication of querysets, registered under ``name`` (default: the class name) by
    defining the subclass; clients subscribe with ``Meteor.subscribe(name, ...params)``.

    Give the querysets as ``queries`` (a class-level list) or return them from
    ``get_queries(self, *params)``: each item a queryset of a model with a
    :class:`~ddpctl.livedata.collection.Collection`, or ``(queryset, "collection name")``.
    ``self.user`` / ``self.user_id`` are the connection's user (``None`` logged out) and
    ``self.subscription`` the :class:`~ddpctl.livedata.publish.Subscription`.  Params that do
    not fit ``get_queries``'s signature give ``nosub`` with ``400 Match failed``; a
    :class:`~ddpctl.ddp.errors.MeteorError` raised reaches the client as is; any other
    exception ``nosub`` with ``500 Internal server error`` (traceback logged).

    Subscribers share an observer when its result cannot differ between them (see
    :meth:`sharing_key`); each client receives only the differences as rows change.
    """

    name: ClassVar[str] = ""
    queries: ClassVar[list[Any] | None] = None
    universal: ClassVar[bool] = False
    """True: Meteor's ``Meteor.publish(null, ...)``, started for every connection without a
    ``sub`` message and re-run when its user changes (at login and logout); ``get_queries``
    then takes no params, and clients cannot subscribe to it by name."""
    user_only: ClassVar[bool] = False
    """For a universal publication whose ``get_queries`` returns nothing without a user:
    run it only while the connection is logged in (no client can tell the difference; an
    idle logged-out connection then holds no subscription for it)."""
    sensitive_params: ClassVar[bool | list[int | str]] = False
    """Params never stored in the node registry, shown by ``ddpctl subs ls`` or logged:
    ``True`` for all, or a list of positions (``int``, from 0) and names (``str``: parameters
    of ``get_queries``, and dict keys at any depth).  Dict keys and ``get_queries`` parameters
    that look secret (``password``, ``token``, ``apiKey``...) always are: :mod:`ddpctl.redaction`."""
    PRIVATE: ClassVar[Any] = PRIVATE
    """Return it from :meth:`sharing_key` to give each subscription an observer of its own."""

    def __init_subclass__(cls, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.name or cls.name == getattr(cls.__mro__[1], "name", ""):
            cls.name = cls.__name__
        if register:
            publications.register(cls.name, _handler_for(cls), universal=cls.universal,
                                  user_only=cls.universal and cls.user_only)
            declare_sensitive("publication", cls.name, cls.sensitive_params, cls.get_queries, skip=1)
            _classes[cls.name] = cls

    def __init__(self, subscription: Subscription | TrackedSubscription) -> None:
        self.subscription = subscription
        self._user: Any = None
        self._user_loaded = False

    @property
    def user_id(self) -> Any:
        """The connection's user id, or ``None`` (the observer is then per user)."""
        return self.subscription.user_id

    @property
    def user(self) -> Any:
        """The connection's Django user, or ``None`` when nobody is logged in (the observer
        is then per user)."""
        user_id = self.subscription.user_id  # read every time: tracks the use, even when cached
        if not self._user_loaded:
            self._user_loaded = True
            if user_id is not None:
                from django.contrib.auth import get_user_model
                self._user = get_user_model()._default_manager.filter(pk=user_id).first()
        return self._user

    def get_queries(self, *params: Any) -> list[Any]:
        """The querysets to publish for these params (default: ``queries``): a list of
        querysets or ``(queryset, collection name)`` pairs.  ``NotImplementedError`` when a
        subclass gives neither."""
        if self.queries is None:
            raise NotImplementedError(f"{type(self).__name__} needs `queries` or `get_queries`")
        return list(self.queries)

    def sharing_key(self, *params: Any) -> Hashable:
        """Declare which subscribers share an observer, instead of letting ddpctl decide.

        Called with the subscription's params before ``get_queries``.  Subscribers with the
        same publication, params and returned value (any hashable; ``None`` included) share
        one observer; return :attr:`PRIVATE` for an observer per subscription.  Override it
        when the queries depend on something ddpctl cannot see (module globals, thread-locals,
        the clock), or to share by tenant although the queries read the connection.  What
        this method reads is not tracked; what ``get_queries`` reads of the user still makes
        the observer per user.  The default (also ``super().sharing_key()``) returns
        ``UNDECLARED``: the scope follows what ``get_queries`` reads (see
        :mod:`ddpctl.livedata.sharing`).  ``TypeError`` (a 500) if the value is not hashable.
        """
        return UNDECLARED

    def _check_params(self, params: list[Any]) -> None:
        """``400 Match failed`` unless ``get_queries`` accepts ``params``."""
        try:
            inspect.signature(self.get_queries).bind(*params)
        except TypeError as exc:
            raise match_failed(f"subscription to {self.name!r}: {exc}") from None

    def _cursor_specs(self, params: list[Any]) -> list[tuple[Collection, QuerySet]]:
        specs = []
        for item in self.get_queries(*params):
            queryset, collection = item if isinstance(item, tuple) else (item, None)
            if collection is None:
                collection = collections.for_model(queryset.model)
            elif isinstance(collection, str):
                found = collections.by_name(collection)
                if found is None:
                    raise LookupError(f"no collection named {collection!r}")
                collection = found
            specs.append((collection, queryset))
        return specs


def static_querysets() -> list[tuple[str, QuerySet]]:
    """``(label, queryset)`` for every registered publication's class-level ``queries``
    (those without an overridden ``get_queries``), for :mod:`.reads`."""
    out = []
    for name, cls in sorted(_classes.items()):
        if cls.queries is None or cls.get_queries is not Publication.get_queries:
            continue
        for item in cls.queries:
            queryset = item[0] if isinstance(item, tuple) else item
            out.append((f"publication {name!r}", queryset))
    return out


def _handler_for(cls: type[Publication]):
    def start(sub: Subscription, *params: Any) -> None:
        reads = Reads()
        pub = cls(TrackedSubscription(sub, reads))
        pub._check_params(list(params))
        declared = pub.sharing_key(*params)
        reads.clear()  # what sharing_key read is what its value stands for
        specs = pub._cursor_specs(list(params))
        per_user = [c.name for c, _ in specs if c.user_dependent]
        sharing = decide(reads, sub.user_id, visible_per_user=per_user, declared=declared)
        user = pub.user if per_user else None
        params_json = json.dumps(to_json_value(list(params)), sort_keys=True)
        key = (cls.name, params_json, sharing.scope)
        observer, created = observers.get_or_create(
            key, lambda: [Cursor(c, c.prepare(c.visible(qs, user))) for c, qs in specs])
        logger.debug("subscription %s of %s %s %s observer %r: %s; refresh: %s", sub.id, cls.name,
                     sub.shown_params,
                     "creates" if created else "joins", sharing.scope, sharing.reason, observer.refresh_mode)
        sub.observer = observer
        observer.add(sub)
        sub.on_stop(lambda: observer.remove(sub))
        if created:
            observer.initialize()

    start.__name__ = f"publish_{cls.__name__}"
    return start
