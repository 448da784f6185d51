"""Table watchers: code that must hear, on every serving node, about committed changes of
some tables -- not to publish documents, but to act on them (``ddpctl.accounts`` closes
the connections whose login token was deleted).

    watchers.register("accounts revocation", lambda: {"ddpctl_accounts_logintoken"}, on_rows)

The change dispatcher calls ``on_rows(rows)`` with the changelog rows of a batch that touch
the watched tables (:class:`~ddpctl.livedata.changelog.ChangeRow`, in commit order), on
the system lane (a database connection is at hand), before the batch goes to observers.
The tables must be captured (see :func:`ddpctl.livedata.capture.capture_models`).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from .changelog import ChangeRow

__all__ = ["Watcher", "WatcherRegistry", "watchers"]

logger = logging.getLogger(__name__)


@dataclass
class Watcher:
    name: str
    tables: Callable[[], Collection[str]]
    callback: Callable[[list[ChangeRow]], None]
    _tables: frozenset[str] | None = field(default=None, repr=False)

    def watched(self) -> frozenset[str]:
        """The watched table names (asked once, when first needed)."""
        if self._tables is None:
            self._tables = frozenset(self.tables())
        return self._tables


class WatcherRegistry:
    def __init__(self) -> None:
        self._watchers: dict[str, Watcher] = {}

    def register(self, name: str, tables: Callable[[], Collection[str]],
                 callback: Callable[[list[ChangeRow]], None]) -> None:
        """Call ``callback(rows)`` for committed changes of ``tables()`` (re-registering a
        name replaces it)."""
        self._watchers[name] = Watcher(name, tables, callback)

    def unregister(self, name: str) -> None:
        self._watchers.pop(name, None)

    def matching(self, rows: Sequence[ChangeRow]) -> list[tuple[Watcher, list[ChangeRow]]]:
        """``(watcher, its rows)`` for each watcher that some of ``rows`` concern."""
        out = []
        for watcher in list(self._watchers.values()):
            tables = watcher.watched()
            mine = [row for row in rows if row.table in tables]
            if mine:
                out.append((watcher, mine))
        return out


watchers = WatcherRegistry()
