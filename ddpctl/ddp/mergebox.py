"""The mergebox: one client's view of every collection (livedata_server.js
``SessionCollectionView``/``SessionDocumentView``).

Several subscriptions of one session may publish the same document.  The client sees one
merged document: for each field, the value of the subscription that published it first
(a precedence list).  Every operation returns only the DDP messages that change what the
client sees.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .ejson import equals

__all__ = ["SessionView", "MergeboxError"]

Message = dict[str, Any]


class MergeboxError(RuntimeError):
    """A publication changed or removed a document it never added."""


_equals = equals  # Meteor compares field values with EJSON.equals


class _DocumentView:
    __slots__ = ("exists_in", "data_by_key")

    def __init__(self) -> None:
        self.exists_in: set[str] = set()
        # field -> precedence list of [subscription handle, value]; the head is visible.
        self.data_by_key: dict[str, list[list[Any]]] = {}

    def fields(self) -> dict[str, Any]:
        return {key: plist[0][1] for key, plist in self.data_by_key.items()}

    def change_field(self, handle: str, key: str, value: Any, changes: dict[str, Any],
                     cleared: list[str], is_add: bool) -> None:
        if key == "_id":
            return
        plist = self.data_by_key.get(key)
        if plist is None:
            self.data_by_key[key] = [[handle, value]]
            changes[key] = value
            if key in cleared:
                cleared.remove(key)
            return
        entry = None if is_add else next((e for e in plist if e[0] == handle), None)
        if entry is None:
            plist.append([handle, value])  # visible value unchanged: nothing to send
            return
        if entry is plist[0] and not _equals(value, entry[1]):
            changes[key] = value
        entry[1] = value

    def clear_field(self, handle: str, key: str, changes: dict[str, Any],
                    cleared: list[str]) -> None:
        plist = self.data_by_key.get(key)
        if plist is None:
            return
        was_head = False
        removed_value = None
        for i, entry in enumerate(plist):
            if entry[0] == handle:
                if i == 0:
                    was_head, removed_value = True, entry[1]
                del plist[i]
                break
        if not plist:
            del self.data_by_key[key]
            changes.pop(key, None)
            cleared.append(key)
        elif was_head and not _equals(removed_value, plist[0][1]):
            changes[key] = plist[0][1]


def _changed(collection: str, doc_id: str, changes: dict[str, Any], cleared: list[str]) -> list[Message]:
    if not changes and not cleared:
        return []
    msg: Message = {"msg": "changed", "collection": collection, "id": doc_id}
    if changes:
        msg["fields"] = changes
    if cleared:
        msg["cleared"] = cleared
    return [msg]


class SessionView:
    """All collections as one session's client sees them, plus which subscription holds what."""

    def __init__(self) -> None:
        self._collections: dict[str, dict[str, _DocumentView]] = {}
        self._held: dict[str, dict[str, set[str]]] = {}  # handle -> collection -> ids

    def added(self, handle: str, collection: str, doc_id: str,
              fields: Mapping[str, Any]) -> list[Message]:
        docs = self._collections.setdefault(collection, {})
        view = docs.get(doc_id)
        is_new = view is None
        if view is None:
            view = docs[doc_id] = _DocumentView()
        view.exists_in.add(handle)
        self._held.setdefault(handle, {}).setdefault(collection, set()).add(doc_id)
        changes: dict[str, Any] = {}
        cleared: list[str] = []
        for key, value in fields.items():
            view.change_field(handle, key, value, changes, cleared, True)
        if is_new:
            msg: Message = {"msg": "added", "collection": collection, "id": doc_id}
            if changes:
                msg["fields"] = changes
            return [msg]
        return _changed(collection, doc_id, changes, cleared)

    def changed(self, handle: str, collection: str, doc_id: str,
                fields: Mapping[str, Any] | None = None, cleared: Iterable[str] = ()) -> list[Message]:
        view = self._collections.get(collection, {}).get(doc_id)
        if view is None:
            raise MergeboxError(f"Could not find element with id {doc_id} to change")
        changes: dict[str, Any] = {}
        cleared_out: list[str] = []
        for key in cleared:
            view.clear_field(handle, key, changes, cleared_out)
        for key, value in (fields or {}).items():
            view.change_field(handle, key, value, changes, cleared_out, False)
        return _changed(collection, doc_id, changes, cleared_out)

    def removed(self, handle: str, collection: str, doc_id: str) -> list[Message]:
        held = self._held.get(handle, {}).get(collection)
        if held is not None:
            held.discard(doc_id)
        return self._remove(handle, collection, doc_id)

    def remove_subscription(self, handle: str) -> list[Message]:
        """Withdraw every document ``handle`` published (unsub, sub error, sub stop)."""
        out: list[Message] = []
        for collection, ids in self._held.pop(handle, {}).items():
            for doc_id in sorted(ids):
                out.extend(self._remove(handle, collection, doc_id))
        return out

    def _remove(self, handle: str, collection: str, doc_id: str) -> list[Message]:
        docs = self._collections.get(collection, {})
        view = docs.get(doc_id)
        if view is None or handle not in view.exists_in:
            raise MergeboxError(f"Removed nonexistent document {doc_id}")
        view.exists_in.discard(handle)
        if not view.exists_in:
            del docs[doc_id]
            return [{"msg": "removed", "collection": collection, "id": doc_id}]
        changes: dict[str, Any] = {}
        cleared: list[str] = []
        for key in list(view.data_by_key):
            view.clear_field(handle, key, changes, cleared)
        return _changed(collection, doc_id, changes, cleared)

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        """What the client sees: collection -> id -> fields."""
        return {name: {doc_id: view.fields() for doc_id, view in docs.items()}
                for name, docs in self._collections.items()}

    def diff(self, before: dict[str, dict[str, dict[str, Any]]]) -> list[Message]:
        """Messages that take a client from ``before`` (a snapshot) to the current view."""
        out: list[Message] = []
        after = self.snapshot()
        for name in sorted(set(before) | set(after)):
            old, new = before.get(name, {}), after.get(name, {})
            for doc_id in sorted(set(old) | set(new)):
                if doc_id not in new:
                    out.append({"msg": "removed", "collection": name, "id": doc_id})
                elif doc_id not in old:
                    msg: Message = {"msg": "added", "collection": name, "id": doc_id}
                    if new[doc_id]:
                        msg["fields"] = new[doc_id]
                    out.append(msg)
                else:
                    changes = {k: v for k, v in new[doc_id].items()
                               if k not in old[doc_id] or not _equals(old[doc_id][k], v)}
                    cleared = [k for k in old[doc_id] if k not in new[doc_id]]
                    out.extend(_changed(name, doc_id, changes, cleared))
        return out

    def held(self, handle: str) -> dict[str, int]:
        """How many documents of each collection ``handle`` publishes."""
        return {name: len(ids) for name, ids in self._held.get(handle, {}).items() if ids}

    def document(self, collection: str, doc_id: str) -> dict[str, Any] | None:
        """The merged fields the client currently has for a document (None if absent)."""
        view = self._collections.get(collection, {}).get(doc_id)
        return None if view is None else view.fields()
