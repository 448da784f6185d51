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

from django.core.exceptions import ValidationError
from django.db import InterfaceError, OperationalError
from django.db.models import QuerySet

from ..ddp.ejson import equals
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
    """``(changed fields, cleared field names)`` turning ``old`` into ``new``; values compare
    with ``EJSON.equals`` (a NaN that stays NaN, or 1 that becomes 1.0, is no change)."""
    changed = {k: v for k, v in new.items() if k not in old or not equals(old[k], v)}
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

    def fetch_all(self) -> Docs:
        # .all(): a fresh clone, never the QuerySet's result cache from the last run
        return dict(self.collection.serialize(obj) for obj in self.queryset.all())

    def fetch(self, doc_ids: Iterable[str]) -> Docs:
        keys = [self.collection.pk_from_id(doc_id) for doc_id in doc_ids]
        return dict(self.collection.serialize(obj) for obj in self.queryset.filter(pk__in=keys))

    def doc_ids(self, pks: Iterable[str]) -> set[str]:
        """Document ids for primary keys in PostgreSQL's text form (the changelog's), which
        is not always ``str(pk)``: ``'t'`` for True, ``'1'`` for the float 1.0, timestamps."""
        out = set()
        for pk in pks:
            try:
                out.add(self.collection.doc_id(self.collection.pk_from_id(pk)))
            except (ValueError, TypeError, ValidationError):
                logger.warning("ignoring a change with primary key %r for %s", pk, self.table)
        return out

    def plan(self, changes: ChangeSet) -> tuple[bool, set[str]]:
        """``(refetch everything?, document ids to refetch)`` for a batch."""
        touched = changes.tables & self.tables
        if not touched:
            return False, set()
        if self.sliced or touched - {self.table} or self.table in changes.full:
            return True, set()
        return False, self.doc_ids(changes.rows.get(self.table, ()))


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
        """Send ``sub`` the current documents and ``ready`` (at once, or after the first query)."""
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
        for cursor in self.cursors:
            name = cursor.collection.name
            for doc_id, fields in cursor.docs.items():
                sub.added(name, doc_id, fields)
        self.subscribers.append(sub)
        sub.ready()

    # -- queries ------------------------------------------------------------------------

    def initialize(self) -> None:
        """Run the first queries, apply changes that arrived meanwhile, welcome subscribers."""
        self._initializing = True
        try:
            for cursor in self.cursors:
                cursor.docs = cursor.fetch_all()
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
        """Bring the documents up to date with a batch of changes and tell subscribers.

        Every row is queried and serialized before anything is sent.  If that fails for a
        reason other than the database connection (which the dispatcher retries), nothing
        of the batch is sent and every subscription ends with ``500`` (``_fail``)."""
        if self._initializing or not self.initialized:
            if self._pending is None:
                self._pending = ChangeSet()
            self._pending.merge(changes)
            return
        try:
            results = self._query(changes)
        except (OperationalError, InterfaceError):
            raise  # the connection, not the data: the dispatcher reads the batch again
        except Exception:
            # A row that cannot be sent (a value with no DDP mapping, a failing converter):
            # nothing was sent for this batch, so end the subscriptions cleanly rather than
            # leave clients with documents that no longer match ours.
            logger.exception("observer %r failed; ending its %d subscription(s)", self.key,
                             len(self.subscribers) + len(self._waiting))
            self._fail()
            return
        self._apply(results)

    def _fail(self) -> None:
        """End every subscription with ``500 Internal server error`` and drop this observer."""
        self._registry.discard(self)
        subs = self.subscribers + self._waiting
        self.subscribers, self._waiting = [], []
        for sub in subs:
            sub.error(internal_server_error())

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
            old = cursor.docs
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
