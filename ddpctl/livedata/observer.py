"""Observers: one live query per (publication, params, user cohort), shared by subscribers.

An observer keeps the documents its querysets currently yield.  For a batch of captured
changes it runs one query per queryset, limited to the changed primary keys, or the whole
queryset when the batch touches another table the query reads (a join, a subquery,
visibility rules) or the queryset is sliced, then sends each subscriber only the
differences: ``added``, ``changed`` (changed fields, ``cleared`` for removed ones) and
``removed``, including rows that enter or leave the result because of the change.
Subscribers share the work, so a write costs the same however many clients watch it.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import QuerySet

from ..ddp.errors import MeteorError, internal_server_error
from .collection import Collection
from .publish import PreparedMessage, Subscription

__all__ = ["ChangeSet", "Cursor", "Observer", "ObserverRegistry", "observers", "diff_fields"]

logger = logging.getLogger(__name__)
Docs = dict[str, dict[str, Any]]
_QUOTED = re.compile(r'"((?:[^"]|"")+)"')


@dataclass
class ChangeSet:
    """Which rows of which tables changed: ``rows[table]`` holds primary keys as text;
    tables in ``full`` changed wholesale (TRUNCATE, or a resync)."""

    rows: dict[str, set[str]] = field(default_factory=dict)
    full: set[str] = field(default_factory=set)

    def add(self, table: str, pk: str | None) -> None:
        if pk is None:
            self.full.add(table)
        else:
            self.rows.setdefault(table, set()).add(pk)

    def merge(self, other: ChangeSet) -> None:
        for table, pks in other.rows.items():
            self.rows.setdefault(table, set()).update(pks)
        self.full |= other.full

    @property
    def tables(self) -> set[str]:
        return set(self.rows) | self.full

    def __bool__(self) -> bool:
        return bool(self.rows or self.full)


def diff_fields(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``(changed fields, cleared field names)`` turning ``old`` into ``new``."""
    changed = {k: v for k, v in new.items() if k not in old or old[k] != v or type(old[k]) is not type(v)}
    cleared = [k for k in old if k not in new]
    return changed, cleared


class Cursor:
    """One queryset of an observer and the documents it yields."""

    def __init__(self, collection: Collection, queryset: QuerySet) -> None:
        self.collection = collection
        self.queryset = queryset
        self.table = collection.table
        self.sliced = queryset.query.is_sliced
        sql = str(queryset.query) if not queryset.query.is_empty() else ""
        # Every table the SQL reads (Django quotes them); the observer listens to all of them.
        self.tables = {m.replace('""', '"') for m in _QUOTED.findall(sql)} | {self.table}
        self.docs: Docs = {}
        self._shared = False

    def snapshot(self) -> Docs:
        """The current documents, to read later: the next change copies them first (copy on write)."""
        self._shared = True
        return self.docs

    def writable_docs(self) -> Docs:
        """The documents, safe to change (a copy if a snapshot of them was handed out)."""
        if self._shared:
            self.docs = dict(self.docs)
            self._shared = False
        return self.docs

    def fetch_all(self) -> Docs:
        # .all(): a fresh clone, never the QuerySet's result cache from the last run
        return dict(self.collection.serialize(obj) for obj in self.queryset.all())

    def fetch(self, pks: Iterable[str]) -> Docs:
        keys = []
        for pk in pks:
            try:
                keys.append(self.collection.pk_from_id(pk))
            except (ValueError, TypeError):
                logger.warning("ignoring a change with primary key %r for %s", pk, self.table)
        return dict(self.collection.serialize(obj) for obj in self.queryset.filter(pk__in=keys))

    def plan(self, changes: ChangeSet) -> tuple[bool, set[str]]:
        """``(refetch everything?, primary keys to refetch)`` for a batch."""
        touched = changes.tables & self.tables
        if not touched:
            return False, set()
        if self.sliced or touched - {self.table} or self.table in changes.full:
            return True, set()
        return False, changes.rows.get(self.table, set())


class Observer:
    def __init__(self, key: Hashable, cursors: list[Cursor], registry: ObserverRegistry) -> None:
        self.key = key
        self.cursors = cursors
        self.subscribers: list[Subscription] = []
        self._waiting: list[Subscription] = []
        self._registry = registry
        self.initialized = False
        self._initializing = False
        self._pending: ChangeSet | None = None
        self.tables: set[str] = set().union(*(c.tables for c in cursors)) if cursors else set()

    # -- subscribers --------------------------------------------------------------------

    def add(self, sub: Subscription) -> None:
        """Hand ``sub`` the current documents (at once, or after the first query): its
        connection sends them and ``ready`` (:meth:`Subscription.welcome`)."""
        if self.initialized:
            self._welcome(sub)
        else:
            self._waiting.append(sub)

    def remove(self, sub: Subscription) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)
        if sub in self._waiting:
            self._waiting.remove(sub)
        if not self.subscribers and not self._waiting:
            self._registry.discard(self)

    def _welcome(self, sub: Subscription) -> None:
        # The subscriber's connection sends the documents (and ready) on its own greenlet, as
        # fast as its client reads; changes from now on follow them.  Nothing waits here.
        self.subscribers.append(sub)
        sub.welcome([(cursor.collection.name, cursor.snapshot()) for cursor in self.cursors])

    # -- queries ------------------------------------------------------------------------

    def initialize(self) -> None:
        """Run the first queries, apply changes that arrived meanwhile, welcome subscribers."""
        self._initializing = True
        try:
            for cursor in self.cursors:
                cursor.docs = cursor.fetch_all()  # a new dict: a snapshot of the old one stays as is
            while self._pending:
                pending, self._pending = self._pending, None
                self._apply(self._query(pending))
        except Exception as exc:
            self._registry.discard(self)
            error = exc if isinstance(exc, MeteorError) else internal_server_error()
            if not isinstance(exc, MeteorError):
                logger.exception("first query of observer %r failed", self.key)
            waiting, self._waiting = self._waiting, []
            for sub in waiting:
                sub.error(error)
            return
        finally:
            self._initializing = False
        self.initialized = True
        waiting, self._waiting = self._waiting, []
        for sub in waiting:
            self._welcome(sub)

    def refresh(self, changes: ChangeSet) -> None:
        """Bring the documents up to date with a batch of changes and tell subscribers."""
        if self._initializing or not self.initialized:
            if self._pending is None:
                self._pending = ChangeSet()
            self._pending.merge(changes)
            return
        self._apply(self._query(changes))

    def _query(self, changes: ChangeSet) -> list[tuple[Cursor, bool, set[str], Docs]]:
        # All queries first (they yield to other greenlets), then every update at once.
        results = []
        for cursor in self.cursors:
            full, pks = cursor.plan(changes)
            if full:
                results.append((cursor, True, pks, cursor.fetch_all()))
            elif pks:
                results.append((cursor, False, pks, cursor.fetch(pks)))
        return results

    def _apply(self, results: list[tuple[Cursor, bool, set[str], Docs]]) -> None:
        messages: list[PreparedMessage] = []
        for cursor, full, pks, fresh in results:
            name = cursor.collection.name
            old = cursor.writable_docs()
            ids = set(old) | set(fresh) if full else {cursor.collection.doc_id(p) for p in pks} | set(fresh)
            for doc_id in sorted(ids):
                before, after = old.get(doc_id), fresh.get(doc_id)
                if after is None:
                    if before is not None:
                        del old[doc_id]
                        messages.append(PreparedMessage("removed", name, doc_id))
                elif before is None:
                    old[doc_id] = after
                    messages.append(PreparedMessage("added", name, doc_id, after))
                else:
                    changed, cleared = diff_fields(before, after)
                    old[doc_id] = after
                    if changed or cleared:
                        messages.append(PreparedMessage("changed", name, doc_id, changed, cleared))
        if not messages:
            return
        for sub in list(self.subscribers):
            for message in messages:
                sub.send(message)


class ObserverRegistry:
    def __init__(self) -> None:
        self._observers: dict[Hashable, Observer] = {}

    def get_or_create(self, key: Hashable, make_cursors: Callable[[], list[Cursor]]) -> tuple[Observer, bool]:
        observer = self._observers.get(key)
        if observer is not None:
            return observer, False
        observer = Observer(key, make_cursors(), self)
        self._observers[key] = observer
        return observer, True

    def discard(self, observer: Observer) -> None:
        if self._observers.get(observer.key) is observer:
            del self._observers[observer.key]

    def affected(self, changes: ChangeSet) -> list[Observer]:
        tables = changes.tables
        return [o for o in self._observers.values() if o.tables & tables]

    def __len__(self) -> int:
        return len(self._observers)


observers = ObserverRegistry()
