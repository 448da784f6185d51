"""The mergebox: one client's view of every collection (livedata_server.js
``SessionCollectionView``/``SessionDocumentView``).

Several subscriptions of one session may publish the same document.  The client sees one
merged document: for each field, the value of the subscription that published it first
(a precedence list).  Every operation returns only the DDP messages that change what the
client sees.

Most documents of a session are published by one subscription only.  Such a document is
kept as a :class:`_SoleDocument` -- its owner and a plain dict of fields -- instead of a
precedence list per field, and a message that an observer already diffed against what that
subscription published (:meth:`SessionView.apply_diffed`) is let through as it is, not
compared again field by field: Meteor's ``NO_MERGE`` publication strategy forwards
messages without merging, but only for publications that never overlap; here the choice is
per document and per message, so the view stays exactly Meteor's ``SERVER_MERGE``
(livedata_server.js ``SessionCollectionView``).  A second subscription publishing the
document turns it into a :class:`_DocumentView` with precedence lists, and back once only one
subscription holds it again.  ``SessionView(sole=False)`` keeps precedence lists for every
document: the reference the tests hold the sole-owner path to.
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


class _SoleDocument:
    """A document one subscription alone publishes: what the client sees is its ``fields``
    (no ``_id``).  ``mine``: the dict is this view's own; else it is shared (an observer's
    document, handed over with ``owned``) and copied before its first change."""

    __slots__ = ("handle", "fields", "mine")

    def __init__(self, handle: str, fields: dict[str, Any], mine: bool) -> None:
        self.handle, self.fields, self.mine = handle, fields, mine

    def writable(self) -> dict[str, Any]:
        if not self.mine:
            self.fields = dict(self.fields)
            self.mine = True
        return self.fields


class _DocumentView:
    __slots__ = ("exists_in", "data_by_key")

    def __init__(self) -> None:
        self.exists_in: set[str] = set()
        # field -> precedence list of [subscription handle, value]; the head is visible.
        self.data_by_key: dict[str, list[list[Any]]] = {}

    @classmethod
    def of(cls, sole: _SoleDocument) -> _DocumentView:
        """The same document with a precedence list per field (a second subscription comes)."""
        view = cls()
        view.exists_in.add(sole.handle)
        view.data_by_key = {key: [[sole.handle, value]] for key, value in sole.fields.items()}
        return view

    def sole(self) -> _SoleDocument | None:
        """This document as a :class:`_SoleDocument` if one subscription alone holds it (and
        once only: a re-added document keeps its lists), else None."""
        if len(self.exists_in) != 1:
            return None
        fields = {}
        for key, plist in self.data_by_key.items():
            if len(plist) != 1:
                return None
            fields[key] = plist[0][1]
        return _SoleDocument(next(iter(self.exists_in)), fields, True)

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


_FORWARD = None  # apply_diffed: the message goes to the client exactly as given


class SessionView:
    """All collections as one session's client sees them, plus which subscription holds what.

    ``sole``: keep a document published by one subscription as a plain dict (see the module
    docstring); False keeps Meteor's precedence lists for every document.
    """

    def __init__(self, sole: bool = True) -> None:
        self._collections: dict[str, dict[str, _DocumentView | _SoleDocument]] = {}
        self._held: dict[str, dict[str, set[str]]] = {}  # handle -> collection -> ids
        self._sole = sole

    def _hold(self, handle: str, collection: str, doc_id: str) -> None:
        self._held_ids(handle, collection).add(doc_id)

    def _held_ids(self, handle: str, collection: str) -> set[str]:
        """The ids of ``collection`` that ``handle`` publishes (made empty if none)."""
        held = self._held.get(handle)
        if held is None:
            held = self._held[handle] = {}
        ids = held.get(collection)
        if ids is None:
            ids = held[collection] = set()
        return ids

    def _merged(self, docs: dict[str, _DocumentView | _SoleDocument], doc_id: str) -> _DocumentView | None:
        """The document with precedence lists (turned into that form if it was sole)."""
        view = docs.get(doc_id)
        if isinstance(view, _SoleDocument):
            view = docs[doc_id] = _DocumentView.of(view)
        return view

    def added(self, handle: str, collection: str, doc_id: str,
              fields: Mapping[str, Any], *, owned: bool = False) -> list[Message]:
        """``owned``: ``fields`` is a dict that nobody changes any more; the view may keep it
        (shared, copied before its first change) rather than copy it."""
        docs = self._collections.get(collection)
        if docs is None:
            docs = self._collections[collection] = {}
        if self._sole and doc_id not in docs:
            self._hold(handle, collection, doc_id)
            if "_id" in fields:
                fields, owned = {k: v for k, v in fields.items() if k != "_id"}, True
            kept = fields if owned and type(fields) is dict else dict(fields)
            docs[doc_id] = _SoleDocument(handle, kept, kept is not fields)
            msg: Message = {"msg": "added", "collection": collection, "id": doc_id}
            if kept:
                msg["fields"] = dict(kept)
            return [msg]
        view = self._merged(docs, doc_id)
        is_new = view is None
        if view is None:
            view = docs[doc_id] = _DocumentView()
        view.exists_in.add(handle)
        self._hold(handle, collection, doc_id)
        changes: dict[str, Any] = {}
        cleared: list[str] = []
        for key, value in fields.items():
            view.change_field(handle, key, value, changes, cleared, True)
        if is_new:
            msg = {"msg": "added", "collection": collection, "id": doc_id}
            if changes:
                msg["fields"] = changes
            return [msg]
        return _changed(collection, doc_id, changes, cleared)

    def added_many(self, handle: str, collection: str,
                   docs: list[tuple[str, Mapping[str, Any]]]) -> list[list[Message] | None]:
        """``added`` of each of ``docs`` (``(id, fields)``, in order) whose ``fields`` nobody
        changes any more (an observer's documents, for a new subscriber): per document,
        ``None`` when the client gets exactly ``{"msg": "added", ..., "fields": fields}`` --
        the document is new to this view and becomes ``handle``'s alone, its ``fields``
        kept as they are, not compared or copied (:meth:`apply_diffed`'s ``added``) -- else
        the messages :meth:`added` returns (a document another subscription holds already)."""
        if not self._sole:
            return [self.added(handle, collection, doc_id, fields, owned=True) for doc_id, fields in docs]
        ids = self._held_ids(handle, collection)
        view = self._collections.get(collection)
        if view is None:
            view = self._collections[collection] = {}
        out: list[list[Message] | None] = []
        for doc_id, fields in docs:
            if doc_id not in view and type(fields) is dict and "_id" not in fields:
                view[doc_id] = _SoleDocument(handle, fields, False)
                ids.add(doc_id)
                out.append(None)
            else:
                out.append(self.added(handle, collection, doc_id, fields, owned=True))
        return out

    def changed(self, handle: str, collection: str, doc_id: str,
                fields: Mapping[str, Any] | None = None, cleared: Iterable[str] = ()) -> list[Message]:
        docs = self._collections.get(collection, {})
        view = docs.get(doc_id)
        if view is None:
            raise MergeboxError(f"Could not find element with id {doc_id} to change")
        changes: dict[str, Any] = {}
        cleared_out: list[str] = []
        if isinstance(view, _SoleDocument) and view.handle == handle:
            # One precedence entry per field: change_field/clear_field reduced to that.
            doc = view.fields
            for key in cleared:
                if key in doc:
                    del view.writable()[key]
                    changes.pop(key, None)
                    cleared_out.append(key)
            for key, value in (fields or {}).items():
                if key == "_id":
                    continue
                if key not in doc:
                    view.writable()[key] = value
                    changes[key] = value
                    if key in cleared_out:
                        cleared_out.remove(key)
                elif not _equals(value, doc[key]):
                    view.writable()[key] = value
                    changes[key] = value
                elif value is not doc[key]:
                    view.writable()[key] = value  # equal, not identical (1 and 1.0): kept, unsent
            return _changed(collection, doc_id, changes, cleared_out)
        view = self._merged(docs, doc_id)
        assert view is not None
        for key in cleared:
            view.clear_field(handle, key, changes, cleared_out)
        for key, value in (fields or {}).items():
            view.change_field(handle, key, value, changes, cleared_out, False)
        return _changed(collection, doc_id, changes, cleared_out)

    def apply_diffed(self, handle: str, op: str, collection: str, doc_id: str,
                     fields: Mapping[str, Any] | None = None, cleared: list[str] | None = None,
                     before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None,
                     ) -> list[Message] | None:
        """``added``/``changed``/``removed`` (``op``) that an observer computed by diffing
        what it sent this subscription before: ``changed`` holds only fields whose values
        differ and ``cleared`` only fields it had sent.  ``fields`` of an ``added`` is kept
        as is (it must not change any more).

        ``before``/``after`` (optional, ``changed`` only): the observer's whole document
        the message was diffed from and to (dicts that nobody changes any more).  A document
        this subscription alone holds whose fields are ``before`` itself (the view kept the
        observer's dict: an ``added`` let through, a welcome's ``owned`` document, or the
        last such ``changed``) then takes ``after`` as it is: no copy, no field written,
        and the session shares the observer's document instead of holding its own.

        Returns ``None`` when the client must get exactly that message -- the document is
        (or becomes, or was) this subscription's alone -- without comparing a field; else
        the messages, as :meth:`added`/:meth:`changed`/:meth:`removed` return them.
        """
        docs = self._collections.get(collection)
        view = docs.get(doc_id) if docs is not None else None
        if self._sole:
            if op == "changed":
                if (view.__class__ is _SoleDocument and view.handle == handle and (fields or cleared)
                        and (not fields or "_id" not in fields)):
                    doc = view.fields
                    if doc is before and before is not None and type(after) is dict:
                        view.fields, view.mine = after, False  # what the client now has, exactly
                        return _FORWARD
                    if not cleared or all(key in doc for key in cleared):
                        doc = view.writable()
                        if cleared:
                            for key in cleared:
                                del doc[key]
                        if fields:
                            doc.update(fields)
                        return _FORWARD
            elif op == "added":
                if view is None and (not fields or "_id" not in fields):
                    if docs is None:
                        docs = self._collections[collection] = {}
                    self._hold(handle, collection, doc_id)
                    kept = fields if type(fields) is dict else dict(fields or {})
                    docs[doc_id] = _SoleDocument(handle, kept, False)
                    return _FORWARD
            elif isinstance(view, _SoleDocument) and view.handle == handle:
                del docs[doc_id]  # type: ignore[union-attr]
                held = self._held.get(handle, {}).get(collection)
                if held is not None:
                    held.discard(doc_id)
                return _FORWARD
        if op == "changed":
            return self.changed(handle, collection, doc_id, fields, cleared or ())
        if op == "added":
            return self.added(handle, collection, doc_id, fields or {}, owned=True)
        return self.removed(handle, collection, doc_id)

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
        if isinstance(view, _SoleDocument):
            if view.handle != handle:
                raise MergeboxError(f"Removed nonexistent document {doc_id}")
            del docs[doc_id]
            return [{"msg": "removed", "collection": collection, "id": doc_id}]
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
        if self._sole:
            sole = view.sole()
            if sole is not None:
                docs[doc_id] = sole
        return _changed(collection, doc_id, changes, cleared)

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        """What the client sees: collection -> id -> fields."""
        return {name: {doc_id: _fields(view) for doc_id, view in docs.items()}
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
        return None if view is None else _fields(view)


def _fields(view: _DocumentView | _SoleDocument) -> dict[str, Any]:
    return dict(view.fields) if isinstance(view, _SoleDocument) else view.fields()
