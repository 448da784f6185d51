"""Multiplexed refresh: a fixed number of queries per batch, however many observers.

For a batch of changes, the cursors of the affected observers are grouped by query shape
(:mod:`.shape`: the same SQL but for its parameters -- other params, another user).  Each
group is refreshed with one statement for all its cohorts, which returns ``(primary key,
cohort)`` pairs:

* of the changed rows only (``WHERE key = ANY(changed keys)``), when only rows of the
  cursor's own table changed (no statement at all for a shape whose results are every row
  of its table, :attr:`Shape.every_row`: a changed row is in them if it still exists);
* of the whole results, keys only, when the batch can move documents without a change to
  their own row: a change to a table the query joins (an author's email for books by
  author email), a TRUNCATE, or any change for a sliced queryset or one whose rows depend
  on other rows of its table (a self-join, ``DISTINCT ON``).  Documents whose key
  enters a result, or whose row changed, are then read; the others are unchanged.

The documents needed are then read once per collection, by primary key, serialized once and
shared by every observer that holds them: a document is a function of its row
(:meth:`Collection.serialize`; a Collection that overrides it is not multiplexed).  The
statements of a collection run in one transaction that reads the batch's snapshot
(:attr:`ChangeSet.snapshot`), like an observer's own queries, except for observers whose
first query is newer than that snapshot, which read current rows in another transaction.
So a batch costs, per affected collection, the transaction's few statements plus one per
shape and one (plus one per many-to-many field) for the documents: flat in the number of
observers.

Each observer then applies its results (:meth:`Observer.apply`) exactly as if it had run
its own queries: same messages, same order.

Observers with a cursor that has no shape (:attr:`Observer.alone`) refresh on their own
(:meth:`Observer.refresh`), as do those not initialized yet (which keep the batch).  If a
group's statement raises (other than for a lost connection, which the dispatcher retries),
its observers refresh on their own for this batch: one that fails then ends alone, as
before.  If none fails, the multiplexed statement was at fault: the shape is marked broken
(logged once, shown by ``ddpctl subs ls``) and its observers refresh on their own from
then on.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter
from typing import Any

from ..database_errors import is_connection_error
from .collection import Collection
from .observer import ChangeSet, Cursor, Observer, Result, read_in_snapshot
from .shape import Shape, cohorts_of

__all__ = ["BatchRefresh"]

logger = logging.getLogger(__name__)

Job = Callable[[], None]
RunJobs = Callable[[Sequence[Job]], None]


class _Request:
    """One cursor to refresh in a group: ``full`` (whole result, keys only) or not."""

    __slots__ = ("cursor", "observer", "full")

    def __init__(self, cursor: Cursor, observer: Observer, full: bool) -> None:
        self.cursor, self.observer, self.full = cursor, observer, full


_UNPLANNED: Any = object()


class _ShapeFailed(Exception):
    def __init__(self, shape: Shape, error: Exception) -> None:
        super().__init__(shape, error)
        self.shape, self.error = shape, error


class BatchRefresh:
    """The refresh of one batch of changes for the observers it affects.

    ``run(run_jobs)`` does it all: ``run_jobs`` runs database jobs (callables) on the
    server's system lane, concurrently, and raises the first exception any of them raised
    once all are done (:class:`ddpctl.server.dispatcher.Dispatcher`).  Only database
    connection errors come out of :meth:`run`; the caller retries the batch on them.
    """

    def __init__(self, changes: ChangeSet, affected: Iterable[Observer]) -> None:
        self.changes = changes
        self.alone: list[Observer] = []
        self.multiplexed: list[Observer] = []
        # (collection name, read in the batch's snapshot?) -> (collection, shape -> requests)
        self._groups: dict[tuple[str, bool], tuple[Collection, dict[Shape, list[_Request]]]] = {}
        self._results: dict[Cursor, Result] = {}
        self._failed: dict[Shape, Exception] = {}
        # (shape, in snapshot?) -> (its requests, full?), or None if the batch leaves it alone
        self._slots: dict[tuple[Shape, bool], tuple[list[_Request], bool] | None] = {}
        for observer in affected:
            self._plan(observer)

    def _plan(self, observer: Observer) -> None:
        changes = self.changes
        if not observer.ready:
            observer.refresh(changes)  # keeps the batch for after its first query: no query now
            return
        if observer.alone is not None:
            self.alone.append(observer)
            return
        in_snapshot = observer.reads_in_snapshot(changes)
        planned = False
        slots = self._slots
        for cursor in observer.cursors:
            shape = cursor.shape
            if shape is None:  # matches nothing, ever
                continue
            slot = slots.get((shape, in_snapshot), _UNPLANNED)
            if slot is _UNPLANNED:  # the plan of a shape's cursors is the same for all of them
                full, ids = cursor.plan(changes)
                if full or ids:
                    collection = cursor.collection
                    group = self._groups.setdefault((collection.name, in_snapshot), (collection, {}))
                    slot = (group[1].setdefault(shape, []), full)
                else:
                    slot = None
                slots[(shape, in_snapshot)] = slot
            if slot is not None:
                slot[0].append(_Request(cursor, observer, slot[1]))
                planned = True
        if planned:
            self.multiplexed.append(observer)

    # -- running ------------------------------------------------------------------------

    def run(self, run_jobs: RunJobs) -> None:
        jobs: list[Job] = [lambda o=observer: o.refresh(self.changes) for observer in self.alone]
        jobs += [lambda k=key: self._refresh_group(*k) for key in self._groups]
        if jobs:
            run_jobs(jobs)
        fallback = {r.observer for shape in self._failed
                    for group in self._groups.values() for r in group[1].get(shape, ())}
        results = self._results
        for observer in self.multiplexed:
            if observer not in fallback:
                mine = [results[c] for c in observer.cursors if c in results]
                if mine:  # else nothing it holds or could hold changed
                    observer.apply(mine, self.changes)
        if fallback:
            run_jobs([lambda o=observer: o.refresh(self.changes) for observer in fallback])
            self._conclude_failures()

    def _conclude_failures(self) -> None:
        for shape, error in self._failed.items():
            members = [r.observer for group in self._groups.values() for r in group[1].get(shape, ())]
            if any(observer.failed for observer in members):
                logger.info("%r: a multiplexed refresh failed (%s: %s) and so did an observer's own; "
                            "the shape stays multiplexed", shape, type(error).__name__, error)
                continue
            shape.broken = f"its multiplexed query failed: {type(error).__name__}: {str(error).strip()}"
            logger.warning("%r: its multiplexed query failed where each observer's own query works; "
                           "its observers refresh one by one from now on", shape, exc_info=error)

    def _refresh_group(self, collection_name: str, in_snapshot: bool) -> None:
        collection, by_shape = self._groups[(collection_name, in_snapshot)]
        pending = {shape: requests for shape, requests in by_shape.items() if shape not in self._failed}
        while pending:
            try:
                self._results.update(self._read(collection, pending, in_snapshot))
                return
            except _ShapeFailed as failure:
                self._failed[failure.shape] = failure.error
                del pending[failure.shape]
            except Exception as exc:  # reading or serializing the documents: blame them all
                if is_connection_error(exc):
                    raise
                for shape in pending:
                    self._failed[shape] = exc
                return

    def _read(self, collection: Collection, by_shape: dict[Shape, list[_Request]],
              in_snapshot: bool) -> dict[Cursor, Result]:
        snapshot = self.changes.snapshot if in_snapshot else None
        return read_in_snapshot(snapshot, lambda: self._read_now(collection, by_shape), collection.name)

    def _read_now(self, collection: Collection,
                  by_shape: dict[Shape, list[_Request]]) -> dict[Cursor, Result]:
        """Every shape's keys, then the documents they need, in the current transaction."""
        changes = self.changes
        changed = changes.doc_ids(collection)  # changed row (changelog text) -> document id
        changed_ids = set(changes.changed_ids(collection))
        for parent in collection.row_tables[1:]:  # multi-table inheritance: fields from there too
            changed_ids.update(changes.doc_ids(collection, parent).values())
        truncated = any(table in changes.full for table in collection.row_tables)
        found: dict[Cursor, list[tuple[str, Any]]] = {}  # cursor -> [(document id, key)]
        every_row: list[tuple[str, Any]] | None = None  # the changed rows, for every_row shapes
        for shape, requests in by_shape.items():
            rows = [r for r in requests if not r.full]
            if rows and shape.every_row:
                # Every row of the table is in its results: the changed rows, those that
                # still exist once read (the others are dropped below, as gone).
                if every_row is None:
                    every_row = [(doc_id, collection.pk_from_id(doc_id)) for doc_id in changed.values()]
                found.update((r.cursor, every_row) for r in rows)
            elif rows:
                found.update(self._keys(shape, rows, list(changed)))
            whole = [r for r in requests if r.full]
            if whole:
                found.update(self._keys(shape, whole, None))
        # The documents to read: rows that changed (or whose table was truncated) and rows
        # that enter a result; a document held and not changed stays as it is.
        wanted: dict[str, Any] = {}
        for cursor, pairs in found.items():
            held = cursor.docs
            for doc_id, key in pairs:
                if truncated or doc_id in changed_ids or doc_id not in held:
                    wanted[doc_id] = key
        docs = collection.read(wanted, next(iter(by_shape)).using)
        results: dict[Cursor, Result] = {}
        for request in (r for requests in by_shape.values() for r in requests):
            cursor = request.cursor
            pairs = found.get(cursor, ())
            held = cursor.docs
            if request.full:
                fresh = {doc_id: docs[doc_id] if doc_id in wanted else held[doc_id] for doc_id, _ in pairs}
                results[cursor] = Result(cursor, {i: doc for i, doc in fresh.items() if doc is not None})
                continue
            # Only the changed rows: most observers neither hold nor get one of them.
            gone = [i for i in changed_ids if i in held] if len(changed_ids) <= len(held) else \
                [i for i in held if i in changed_ids]
            if not pairs and not gone:
                continue
            fresh = {doc_id: doc for doc_id, _ in pairs if (doc := docs.get(doc_id)) is not None}
            results[cursor] = Result(cursor, fresh, [i for i in gone if i not in fresh])
        return results

    @staticmethod
    def _keys(shape: Shape, requests: list[_Request],
              keys: list[str] | None) -> dict[Cursor, list[tuple[str, Any]]]:
        """One statement for ``requests`` of ``shape``: ``{cursor: [(document id, key)]}``."""
        cursors = [r.cursor for r in requests]
        cohorts, members = cohorts_of(cursors, attrgetter("params"), attrgetter("cohort_key"))
        try:
            rows = shape.query(cohorts, keys)
        except Exception as exc:  # the transaction is lost: the group is read again without it
            if is_connection_error(exc):
                raise
            raise _ShapeFailed(shape, exc) from exc
        doc_id = shape.collection.doc_id
        out: dict[Cursor, list[tuple[str, Any]]] = {}
        if keys is None:  # the whole results: a cursor missing from them has none
            out.update((c, []) for m in members for c in m)
        for key, number in rows:
            pair = (doc_id(key), key)
            for cursor in members[number]:
                out.setdefault(cursor, []).append(pair)
        return out
