"""Publications over Django models.

    class AllBooks(Publication):
        queries = [Book.objects.all(), Author.objects.all()]

    class BooksByAuthorEmail(Publication):
        def get_queries(self, email):
            return [Book.objects.filter(author__email=email)]

Defining the class registers it under its class name (or ``name``).  ``get_queries``
receives the subscription's params and may use ``self.user`` / ``self.user_id`` (the
connection's user); subscribers whose publication, params and user cohort match share
one observer.  An item may be ``(queryset, "collection name")`` to publish through a
specific collection.  Bad params give ``400 Match failed``; an exception gives ``nosub``
with ``500 Internal server error`` (and a logged traceback).
"""
from __future__ import annotations

import inspect
import json
from typing import Any, ClassVar

from django.db.models import QuerySet

from ..ddp.ejson import to_json_value
from ..ddp.errors import MeteorError
from .collection import Collection, collections
from .observer import Cursor, observers
from .publish import Subscription, publications

__all__ = ["Publication", "static_querysets"]

_classes: dict[str, type[Publication]] = {}


class Publication:
    name: ClassVar[str] = ""
    queries: ClassVar[list[Any] | None] = None

    def __init_subclass__(cls, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.name or cls.name == getattr(cls.__mro__[1], "name", ""):
            cls.name = cls.__name__
        if register:
            publications.register(cls.name, _handler_for(cls))
            _classes[cls.name] = cls

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self._user_used = False
        self._user: Any = None
        self._user_loaded = False

    @property
    def user_id(self) -> Any:
        self._user_used = True
        return self.subscription.user_id

    @property
    def user(self) -> Any:
        """The connection's Django user, or ``None`` when nobody is logged in."""
        self._user_used = True
        if not self._user_loaded:
            self._user_loaded = True
            if self.subscription.user_id is not None:
                from django.contrib.auth import get_user_model
                self._user = get_user_model()._default_manager.filter(pk=self.subscription.user_id).first()
        return self._user

    def get_queries(self, *params: Any) -> list[Any]:
        if self.queries is None:
            raise NotImplementedError(f"{type(self).__name__} needs `queries` or `get_queries`")
        return list(self.queries)

    def _cursor_specs(self, params: list[Any]) -> list[tuple[Collection, QuerySet]]:
        try:
            inspect.signature(self.get_queries).bind(*params)
        except TypeError as exc:
            raise MeteorError(400, "Match failed", str(exc)) from None
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
        pub = cls(sub)
        specs = pub._cursor_specs(list(params))
        visibility_per_user = any(c.user_dependent for c, _ in specs)
        user = pub.user if visibility_per_user else None
        cohort = sub.user_id if pub._user_used or visibility_per_user else None
        key = (cls.name, json.dumps(to_json_value(list(params)), sort_keys=True), cohort)
        observer, created = observers.get_or_create(
            key, lambda: [Cursor(c, c.prepare(c.visible(qs, user))) for c, qs in specs])
        observer.add(sub)
        sub.on_stop(lambda: observer.remove(sub))
        if created:
            observer.initialize()

    start.__name__ = f"publish_{cls.__name__}"
    return start
