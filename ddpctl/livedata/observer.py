"""Observers: one live query per (publication, params, user cohort), shared by subscribers.

An observer keeps the documents its querysets currently yield.  For a batch of captured
changes it runs one query per queryset, limited to the changed primary keys, or the whole
queryset when the batch touches another table the query reads (a join, a subquery,
visibility rules), the queryset is sliced or its rows depend on other rows of its table
(a self-join, ``DISTINCT ON``, a window function), then sends each subscriber only the
differences: ``added``, ``changed`` (changed fields, ``cleared`` for removed ones) and
``removed``, including rows that enter or leave the result because of the change.
Subscribers share the work, so a write costs the same however many clients watch it.

Order.  A :class:`ChangeSet` numbers the changes of a batch in the order the changelog
yields them (commit order; see :mod:`ddpctl.livedata.changelog`) and keeps, for each row,
the position of its last change.  An observer sends the messages of a batch sorted by
position, across all its querysets (collections), not grouped by collection:

* a document whose own row changed (or whose table was truncated) goes at the position of
  its last change; several changes of one document in one batch are conflated into one
  message carrying its final state, at that last position (a row's fields come from the
  row alone; if a later change to a joined table also moved it in or out in the same
  batch, the message still goes at the row's own last change);
* a document that enters, leaves or changes without a change to its own row -- because a
  table the query joins changed, or, for a sliced queryset (or one whose rows depend on
  other rows of its table), another row of its table --
  goes at the position of the last change to those tables (the latest change that can have
  caused it: a message never goes out before a change it reflects);
* ties keep the order of the querysets, then of the query's rows.

Errors.  A query or serialization of an observer that raises (user code: a bad annotation,
a division by zero in SQL, a serializer error) ends that observer only: its subscribers
get ``nosub`` with Meteor's ``500 Internal server error`` (a :class:`MeteorError` is sent
as raised), the traceback is logged once and the observer is discarded, on the first
query as on any later one.  A database connection problem
(:func:`ddpctl.database_errors.is_connection_error`) is raised to the dispatcher instead,
which retries the batch.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple, TypeVar

from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from django.db.models import QuerySet

from ..database_errors import is_connection_error
from ..ddp.ejson import equals
from ..ddp.errors import MeteorError, internal_server_error
from ..redaction import redact_params_json
from .capture import ensure_captured
from .collection import Collection
from .publish import AddedTexts, PreparedMessage, SharedDocuments, Subscription
from .reads import depends_on_other_rows, relation_scans
from .rounds import first_queries
from .shape import NotMultiplexable, Shape, cohort_key, shapes

__all__ = ["ChangeSet", "Cursor", "Observer", "ObserverRegistry", "Result", "observers", "diff_fields",
           "read_in_snapshot"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
Docs = dict[str, dict[str, Any]]


@dataclass
class ChangeSet:
    """Which rows of which tables changed, and in which order.

    Positions count the changes added, from 0, in commit order.  ``rows[table][pk]`` is
    the position of the last change of the row with primary key ``pk`` (as text);
    ``full[table]`` the position of the last wholesale change of ``table`` (TRUNCATE, or
    a resync); ``latest[table]`` the position of the last change of any kind to ``table``;
    ``size`` how many changes were added.

    ``snapshot``: a PostgreSQL snapshot (``pg_export_snapshot()``) in which the batch was
    read, exported until every observer has applied it, and ``taken_at`` when it was taken
    (``time.monotonic()``): observers read the batch's rows as of that snapshot, so a row
    changed again since carries the state of this batch, not of a later one.  Merged change
    sets have none (they are applied to the current state).
    """

    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    full: dict[str, int] = field(default_factory=dict)
    latest: dict[str, int] = field(default_factory=dict)
    size: int = 0
    snapshot: str | None = None
    taken_at: float = 0.0
    # per collection, computed once per batch for all its observers (cleared by add/merge)
    _ids: dict[str, dict[str, str]] = field(default_factory=dict, repr=False, compare=False)
    _own: dict[str, dict[str, int]] = field(default_factory=dict, repr=False, compare=False)
    _id_sets: dict[str, frozenset[str]] = field(default_factory=dict, repr=False, compare=False)
    _tables: frozenset[str] | None = field(default=None, repr=False, compare=False)

    def add(self, table: str, pk: str | None) -> None:
        """Record the next change: of row ``pk`` of ``table``, or of all of it if ``pk`` is None."""
        position = self.size
        self.size += 1
        if pk is None:
            self.full[table] = position
        else:
            self.rows.setdefault(table, {})[pk] = position
        self.latest[table] = position
        self._forget()

    def merge(self, other: ChangeSet) -> None:
        """Append the changes of ``other``, a later batch (its positions come after ours)."""
        offset = self.size
        for table, pks in other.rows.items():
            mine = self.rows.setdefault(table, {})
            for pk, position in pks.items():
                mine[pk] = position + offset
        for table, position in other.full.items():
            self.full[table] = position + offset
        for table, position in other.latest.items():
            self.latest[table] = position + offset
        self.size += other.size
        self._forget()

    def _forget(self) -> None:
        self._ids.clear()
        self._own.clear()
        self._id_sets.clear()
        self._tables = None

    @property
    def tables(self) -> frozenset[str]:
        """The tables changed."""
        if self._tables is None:
            self._tables = frozenset(self.latest)
        return self._tables

    def changed_ids(self, collection: Collection) -> frozenset[str]:
        """The document ids of the changed rows of ``collection``'s own table (computed once
        per batch and collection, shared by all its observers)."""
        found = self._id_sets.get(collection.name)
        if found is None:
            found = self._id_sets[collection.name] = frozenset(self.doc_ids(collection).values())
        return found

    def __bool__(self) -> bool:
        return bool(self.latest)

    def doc_ids(self, collection: Collection, table: str | None = None) -> dict[str, str]:
        """``{primary key text (the changelog's): document id}`` of the changed rows of
        ``table`` (by default ``collection``'s own; else one of its ``row_tables``, whose
        keys are the same); a key that cannot be one of its rows is left out (logged).

        The changelog's text is PostgreSQL's, not always ``str(pk)``: ``'t'`` for True,
        ``'1'`` for the float 1.0, timestamps."""
        table = table or collection.table
        found = self._ids.get(f"{collection.name}\0{table}")
        if found is None:
            found = {}
            for pk in self.rows.get(table, ()):
                try:
                    found[pk] = collection.doc_id(collection.pk_from_id(pk))
                except (ValueError, TypeError, ValidationError):
                    logger.warning("ignoring a change with primary key %r for %s", pk, table)
            self._ids[f"{collection.name}\0{table}"] = found
        return found

    def own_positions(self, collection: Collection) -> dict[str, int]:
        """``{document id: position}`` of the changed rows of ``collection``'s table: the
        position of the row's last change, or of its table's TRUNCATE if later."""
        found = self._own.get(collection.name)
        if found is None:
            truncated = self.full.get(collection.table, -1)
            rows = self.rows.get(collection.table, {})
            found = {doc_id: max(rows[pk], truncated) for pk, doc_id in self.doc_ids(collection).items()}
            self._own[collection.name] = found
        return found


class Result(NamedTuple):
    """A cursor's documents after a batch: ``fresh`` holds the current state of the rows
    read; ``candidates`` the other ids that may have changed (their rows were read, and
    are gone from its result), or None if ``fresh`` is its whole result."""

    cursor: Cursor
    fresh: Docs
    candidates: Iterable[str] | None = None


def diff_fields(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``(changed fields, cleared field names)`` turning ``old`` into ``new``; values compare
    with ``EJSON.equals`` (a NaN that stays NaN, or 1 that becomes 1.0, is no change)."""
    changed = {k: v for k, v in new.items() if k not in old or not equals(old[k], v)}
    cleared = [k for k in old if k not in new]
    return changed, cleared


class Cursor:
    """One queryset of an observer and the documents it yields.

    ``shape``: its :class:`~.shape.Shape` if it refreshes with the cursors of other
    observers (:mod:`.multiplex`), with ``params`` its parameter values; else ``alone`` says
    why it refreshes on its own, or ``shape`` and ``alone`` are both None for a queryset
    that cannot match anything (``none()``)."""

    # A change to one row of its table can move others in or out (a self-join, DISTINCT ON,
    # a window function: :func:`.reads.depends_on_other_rows`); with a slice, such a change
    # re-reads the whole result.
    rows_depend = False

    def __init__(self, collection: Collection, queryset: QuerySet) -> None:
        self.collection = collection
        self.queryset = queryset
        self.table = collection.table
        self.sliced = queryset.query.is_sliced
        self.shape: Shape | None = None
        self.params: tuple[Any, ...] = ()
        self.alone: str | None = None
        try:
            self.shape, self.params = shapes.resolve(collection, queryset)
        except NotMultiplexable as exc:
            self.alone = str(exc)
        self.cohort_key = cohort_key(self.params)
        # Every table the SQL reads (as PostgreSQL plans it); the observer listens to all of them.
        if self.shape is not None:
            self.tables = set(self.shape.tables)
            self.rows_depend = self.shape.whole
        else:
            scans = relation_scans(queryset)
            self.tables = set(scans) | {self.table}
            self.rows_depend = depends_on_other_rows(queryset, scans)
        self.docs: Docs = {}
        self._shared = False

    _texts: AddedTexts | None = None

    @property
    def texts(self) -> AddedTexts:
        """The ``added`` texts of its documents, shared by the subscribers it welcomes
        (made at the first welcome)."""
        if self._texts is None:
            self._texts = AddedTexts(self.collection.name)
        return self._texts

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

    def first_docs(self) -> Docs:
        """Its documents, for its observer's first query: in a round with the other new
        observers of its shape (:mod:`.rounds`), or alone."""
        if self.shape is not None and self.shape.broken is None:
            return first_queries(self.shape).fetch(self)
        return self.fetch_all()

    def fetch_all(self) -> Docs:
        # .all(): a fresh clone, never the QuerySet's result cache from the last run
        return self.collection.documents(self.queryset.all())

    def fetch(self, doc_ids: Iterable[str]) -> Docs:
        keys = [self.collection.pk_from_id(doc_id) for doc_id in doc_ids]
        return self.collection.documents(self.queryset.filter(pk__in=keys))

    def plan(self, changes: ChangeSet) -> tuple[bool, frozenset[str]]:
        """``(refetch everything?, document ids to refetch)`` for a batch."""
        if changes.tables.isdisjoint(self.tables):
            return False, frozenset()
        if self.sliced or self.rows_depend or self.table in changes.full \
                or len(changes.tables & self.tables) > 1 or self.table not in changes.tables:
            return True, frozenset()
        return False, changes.changed_ids(self.collection)

    def order(self, changes: ChangeSet) -> tuple[dict[str, int], int]:
        """Where this cursor's messages for ``changes`` go (the module's order rules):
        ``({document id: position of the last change of its own row}, the position of any
        other document)``.  The latter is the table's TRUNCATE, else the last change that
        can move documents without a change to their own row: to another table the query
        reads or, if the queryset is sliced or depends on other rows, to any row of its table
        (-1 if none)."""
        own = changes.own_positions(self.collection)
        truncated = changes.full.get(self.table, -1)
        if truncated >= 0:
            return own, truncated
        tables = self.tables & changes.tables  # a new set (self.tables is a set)
        if not (self.sliced or self.rows_depend):
            tables.discard(self.table)
        return own, max((changes.latest[t] for t in tables), default=-1)


class Observer:
    @cached_property
    def log_name(self) -> str:
        """The observer's key as logs show it: a publication's ``(name, params JSON, scope)``
        with its secret params redacted (:mod:`ddpctl.redaction`); computed once."""
        key = self.key
        if isinstance(key, tuple) and len(key) >= 2 and isinstance(key[0], str) and isinstance(key[1], str):
            key = (key[0], redact_params_json("publication", key[0], key[1]), *key[2:])
        return repr(key)

    def __init__(self, key: Hashable, cursors: list[Cursor], registry: ObserverRegistry) -> None:
        self.key = key
        self.cursors = cursors
        self.subscribers: list[Subscription] = []
        self._waiting: list[Subscription] = []
        self._registry = registry
        self.initialized = False
        self._initializing = False
        self._pending: ChangeSet | None = None
        self._queried_at = 0.0  # time.monotonic() when the first query began
        self.failed = False
        self.tables: set[str] = set().union(*(c.tables for c in cursors)) if cursors else set()
        # the publication's name: the key's first item (:mod:`.sharing`)
        self.publication = str(key[0] if isinstance(key, tuple) and key else key)

    @property
    def documents(self) -> int:
        """How many documents the observer holds, over all its querysets."""
        return sum(len(cursor.docs) for cursor in self.cursors)

    @property
    def alone(self) -> str | None:
        """Why this observer refreshes on its own (one query per batch), or None when every
        cursor refreshes with those of other observers (:mod:`.multiplex`)."""
        for cursor in self.cursors:
            if cursor.alone is not None:
                return cursor.alone
            if cursor.shape is not None and cursor.shape.broken is not None:
                return cursor.shape.broken
        return None

    @property
    def refresh_mode(self) -> str:
        """How this observer refreshes, as ``ddpctl subs ls`` shows it: ``multiplexed`` or
        ``alone: <why>``."""
        alone = self.alone
        return "multiplexed" if alone is None else f"alone: {alone}"

    def reads_in_snapshot(self, changes: ChangeSet) -> bool:
        """Whether to read ``changes``' rows in the batch's snapshot: it has one, not older
        than this observer's first query (older rows would take its documents back)."""
        return changes.snapshot is not None and changes.taken_at >= self._queried_at

    @property
    def ready(self) -> bool:
        """Initialized and not initializing: a batch is applied now, not kept for later."""
        return self.initialized and not self._initializing

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
        for cursor in self.cursors:
            cursor.texts.prune(cursor.docs)
        sub.welcome([SharedDocuments(cursor.collection.name, cursor.snapshot(), cursor.texts)
                     for cursor in self.cursors])

    # -- queries ------------------------------------------------------------------------

    def initialize(self) -> None:
        """Run the first queries, apply changes that arrived meanwhile, welcome subscribers.

        If a query raises, the waiting subscribers get ``nosub`` with the error (see
        :meth:`fail`)."""
        self._initializing = True
        try:
            ensure_captured(self.tables)
            for cursor in self.cursors:
                cursor.docs = cursor.first_docs()  # a new dict: a snapshot of the old one stays as is
            # After the queries, not before: a batch whose snapshot is older than their data
            # must not be read in it (reads_in_snapshot); one taken meanwhile reads current rows.
            self._queried_at = time.monotonic()
            while self._pending:
                pending, self._pending = self._pending, None
                self.apply(self._query(pending), pending)
        except Exception as exc:
            self.fail(exc)
            return
        finally:
            self._initializing = False
        self.initialized = True
        waiting, self._waiting = self._waiting, []
        for sub in waiting:
            self._welcome(sub)

    def refresh(self, changes: ChangeSet) -> None:
        """Bring the documents up to date with a batch of changes and tell subscribers.

        A database connection error is raised (the caller retries the batch); any other
        exception ends this observer (:meth:`fail`) and is not raised."""
        if self._initializing or not self.initialized:
            if self._pending is None:
                self._pending = ChangeSet()
            self._pending.merge(changes)
            return
        try:
            self.apply(self._query(changes), changes)
        except Exception as exc:
            if is_connection_error(exc):
                raise
            self.fail(exc)

    def fail(self, exc: Exception) -> None:
        """End this observer: discard it and end every subscription with ``nosub`` and the
        error -- ``exc`` itself if it is a :class:`MeteorError`, else ``500 Internal server
        error`` after logging the traceback once (Meteor's behaviour for a publication that
        throws)."""
        self._registry.discard(self)
        self.failed = True
        if isinstance(exc, MeteorError):
            error = exc
        else:
            logger.error("observer %s failed; ending its subscriptions with 500 Internal server error",
                         self.log_name, exc_info=exc)
            error = internal_server_error()
        subscribers = self._waiting + self.subscribers
        self._waiting, self.subscribers = [], []
        for sub in subscribers:
            sub.error(error)

    def _query(self, changes: ChangeSet) -> list[Result]:
        """The rows ``changes`` touch, read in the batch's snapshot when it has one that is
        not older than this observer's first query (else, or if the snapshot is gone, as
        they are now)."""
        snapshot = changes.snapshot if self.reads_in_snapshot(changes) else None
        return read_in_snapshot(snapshot, lambda: self._run_queries(changes), f"observer {self.log_name}")

    def _run_queries(self, changes: ChangeSet) -> list[Result]:
        # All queries first (they yield to other greenlets), then every update at once.
        results = []
        for cursor in self.cursors:
            full, ids = cursor.plan(changes)
            if full:
                results.append(Result(cursor, cursor.fetch_all()))
            elif ids:
                results.append(Result(cursor, cursor.fetch(ids), ids))
        return results

    def apply(self, results: list[Result], changes: ChangeSet) -> None:
        """Bring the cursors' documents to ``results`` (of this batch) and send the
        differences to the subscribers, in the order of the module's rules."""
        # Messages of every cursor, then sorted by position (stable: ties keep cursor, then row order).
        ordered: list[tuple[int, PreparedMessage]] = []
        for cursor, fresh, candidates in results:
            name = cursor.collection.name
            old = cursor.writable_docs()
            own, other = cursor.order(changes)
            if candidates is None:  # the whole result: every document held may have left
                candidates = old
            for doc_id in [*fresh, *(i for i in candidates if i not in fresh)]:
                before, after = old.get(doc_id), fresh.get(doc_id)
                if before is after and after is not None:  # the very same document: unchanged
                    continue
                if after is None:
                    if before is None:
                        continue
                    del old[doc_id]
                    message = PreparedMessage("removed", name, doc_id)
                elif before is None:
                    old[doc_id] = after
                    message = PreparedMessage("added", name, doc_id, after)
                else:
                    changed, cleared = diff_fields(before, after)
                    old[doc_id] = after
                    if not (changed or cleared):
                        continue
                    message = PreparedMessage("changed", name, doc_id, changed, cleared, before, after)
                ordered.append((own.get(doc_id, other), message))
        if not ordered:
            return
        ordered.sort(key=lambda item: item[0])
        messages = [message for _, message in ordered]
        subscribers = list(self.subscribers)
        self._registry.messages_sent[self.publication] += len(messages) * len(subscribers)  # per batch
        for sub in subscribers:
            sub.send_all(messages)  # one call per subscriber, not one per message


class _SnapshotUnavailable(Exception):
    pass


def read_in_snapshot(snapshot: str | None, read: Callable[[], T], who: str) -> T:
    """``read()`` in a transaction reading ``snapshot`` (``pg_export_snapshot()`` text), or,
    if it is None or PostgreSQL no longer has it (logged for ``who``), reading current rows.
    Database errors of ``read`` propagate.

    On a connection in autocommit mode (the system lane's), the transaction begins and
    imports the snapshot in one round trip (``BEGIN ...; SET TRANSACTION SNAPSHOT``) and
    ends with ``ROLLBACK`` (it only read), instead of psycopg2's own ``BEGIN`` round trip
    before them: the NOTIFY-to-client path pays each round trip per batch."""
    if snapshot is not None:
        if connection.get_autocommit() and not connection.in_atomic_block:
            return _read_in_own_transaction(snapshot, read, who)
        try:
            with transaction.atomic():
                _import_snapshot(snapshot)
                return read()
        except _SnapshotUnavailable as exc:
            logger.info("%s: reading current rows, the batch's snapshot is gone (%s)", who, exc)
    return read()


def _read_in_own_transaction(snapshot: str, read: Callable[[], T], who: str) -> T:
    with connection.cursor() as cursor:
        try:
            cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT %s",
                           [snapshot])
        except DatabaseError as exc:
            if is_connection_error(exc):
                raise
            cursor.execute("ROLLBACK")  # BEGIN ran; the failed import aborted the transaction
            logger.info("%s: reading current rows, the batch's snapshot is gone (%s)", who, str(exc).strip())
            return read()
    try:
        result = read()
    except BaseException as exc:
        if not (isinstance(exc, Exception) and is_connection_error(exc)):  # else nothing to end
            try:
                with connection.cursor() as cursor:
                    cursor.execute("ROLLBACK")
            except Exception:  # the read's own error is the one that counts
                logger.debug("%s: ROLLBACK after a failed read failed too", who, exc_info=True)
        raise
    with connection.cursor() as cursor:
        cursor.execute("ROLLBACK")  # it only read: ends the transaction
    return result


def _import_snapshot(snapshot: str) -> None:
    """Make this (new) transaction read in ``snapshot``; :class:`_SnapshotUnavailable` if
    PostgreSQL no longer has it.  Connection errors propagate as they are."""
    with connection.cursor() as cursor:
        try:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY; "
                           "SET TRANSACTION SNAPSHOT %s", [snapshot])  # one round trip
        except DatabaseError as exc:
            if is_connection_error(exc):
                raise
            raise _SnapshotUnavailable(str(exc).strip()) from exc


class ObserverRegistry:
    def __init__(self) -> None:
        self._observers: dict[Hashable, Observer] = {}
        # publication name -> messages its observers handed their subscribers (one count per
        # batch and observer), for ``ddpctl top`` and the metrics (:mod:`ddpctl.server.stats`)
        self.messages_sent: Counter[str] = Counter()

    def get_or_create(self, key: Hashable, make_cursors: Callable[[], list[Cursor]]) -> tuple[Observer, bool]:
        observer = self._observers.get(key)
        if observer is not None:
            return observer, False
        cursors = make_cursors()  # may yield: it asks PostgreSQL which tables the queries read
        observer = self._observers.get(key)  # so another subscriber may have created it meanwhile
        if observer is not None:
            return observer, False
        observer = Observer(key, cursors, self)
        self._observers[key] = observer
        return observer, True

    def discard(self, observer: Observer) -> None:
        if self._observers.get(observer.key) is observer:
            del self._observers[observer.key]

    def all(self) -> list[Observer]:
        """Every live observer of this process (keys: see :mod:`.sharing`)."""
        return list(self._observers.values())

    def affected(self, changes: ChangeSet) -> list[Observer]:
        tables = changes.tables
        return [o for o in self._observers.values() if not tables.isdisjoint(o.tables)]

    def __len__(self) -> int:
        return len(self._observers)


observers = ObserverRegistry()
