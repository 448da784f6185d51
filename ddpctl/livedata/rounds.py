"""First queries in rounds: new observers of one query shape share their first query.

When many clients subscribe at once with different params (a thousand users opening the
same page), each new observer needs its first documents.  Instead of one query each, the
new observers of a shape (:mod:`.shape`) are queried together, in rounds: the first to
arrive runs a round at once, for itself; those that arrive while a round runs wait for the
next one, which the first of them runs for all of them.  A round of several is the shape's
multiplexed statement over the whole results (keys only) and one read of the documents,
each serialized once however many observers hold it; a round of one is the observer's
own query.  A waiting observer holds no database
connection of its own (unless its publication already used one), so a burst of
subscriptions takes a round's connection, not the whole pool, and other work -- methods,
other subscriptions -- does not queue behind it.

If a round's statement fails (other than for a lost connection), each observer of that
round runs its own query instead, so an error ends only the observer it belongs to.
Waiting uses :mod:`threading` primitives, which the server makes cooperative (gevent).
"""
from __future__ import annotations

import logging
import threading
import weakref
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from ..database_errors import is_connection_error
from .shape import Shape, cohorts_of

if TYPE_CHECKING:
    from .observer import Cursor

__all__ = ["FirstQueries", "first_queries"]

logger = logging.getLogger(__name__)
Docs = dict[str, dict[str, Any]]


class _Entry:
    __slots__ = ("cursor", "wake", "docs", "error", "finished")

    def __init__(self, cursor: Cursor) -> None:
        self.cursor = cursor
        self.wake = threading.Event()
        self.docs: Docs | None = None  # None with finished: query alone
        self.error: BaseException | None = None
        self.finished = False


class FirstQueries:
    """The rounds of one shape."""

    def __init__(self, shape: Shape) -> None:
        self._shape = shape
        self._lock = threading.Lock()
        self._waiting: list[_Entry] = []
        self._running = False

    def fetch(self, cursor: Cursor) -> Docs:
        """``cursor``'s documents (``{id: fields}``, in the order PostgreSQL returned
        them), from a round.  Raises what the query raised."""
        entry = _Entry(cursor)
        with self._lock:
            self._waiting.append(entry)
            lead = not self._running
            self._running = True
        if not lead:
            entry.wake.wait()  # woken with its documents, or to run the next round
        if not entry.finished:
            self._run_round()
        if entry.error is not None:
            raise entry.error
        return entry.docs if entry.docs is not None else cursor.fetch_all()

    def _run_round(self) -> None:
        with self._lock:
            batch, self._waiting = self._waiting, []
        try:
            if len(batch) == 1:  # nobody to share with: its own query, one statement
                batch[0].docs = batch[0].cursor.fetch_all()
            else:
                self._query(batch)
        except BaseException as exc:
            if len(batch) == 1 or is_connection_error(exc) or not isinstance(exc, Exception):
                for entry in batch:
                    entry.error = exc
            else:  # each runs its own query: an error belongs to one observer, not the round
                logger.info("%r: a round of %d first queries failed (%s: %s); each runs alone",
                            self._shape, len(batch), type(exc).__name__, exc)
                for entry in batch:
                    entry.docs = None
        finally:
            for entry in batch:
                entry.finished = True
            with self._lock:
                if self._waiting:
                    self._waiting[0].wake.set()  # it runs the next round (still _running)
                else:
                    self._running = False
            for entry in batch:
                entry.wake.set()

    def _query(self, batch: list[_Entry]) -> None:
        shape = self._shape
        cohorts, members = cohorts_of(batch, attrgetter("cursor.params"), attrgetter("cursor.cohort_key"))
        pairs = [(shape.collection.doc_id(key), key, number) for key, number in shape.query(cohorts, None)]
        docs = shape.collection.read({doc_id: key for doc_id, key, _ in pairs}, shape.using)
        per_cohort: list[Docs] = [{} for _ in cohorts]
        for doc_id, _, number in pairs:
            doc = docs.get(doc_id)
            if doc is not None:
                per_cohort[number][doc_id] = doc
        for number, entries in enumerate(members):
            for entry in entries:
                entry.docs = per_cohort[number] if len(entries) == 1 else dict(per_cohort[number])
        logger.debug("%r: %d first queries in one round (%d cohorts, %d documents)", shape, len(batch),
                     len(cohorts), len(docs))


_rounds: weakref.WeakKeyDictionary[Shape, FirstQueries] = weakref.WeakKeyDictionary()
_rounds_lock = threading.Lock()


def first_queries(shape: Shape) -> FirstQueries:
    """The rounds of ``shape`` (made on first use, gone with the shape)."""
    with _rounds_lock:
        found = _rounds.get(shape)
        if found is None:
            found = _rounds[shape] = FirstQueries(shape)
        return found
