"""Changelog rows as the clients receive them: the changed document as its Collection sends
it, and the DDP message an observer sends for the change (``ddpctl tail``).

The changelog records which row changed and, for an update, which columns, never values
(:mod:`.capture`).  The values are read here, after the change was committed and seen: a
document is its row as it is *when read*, through :meth:`Collection.read` (its
``fields`` / ``exclude``, ``serialize``, many-to-many ``<name>_ids``, the value mapping of
:mod:`ddpctl.values`), so an excluded field is never shown, and a row changed again or
deleted since shows its newer state or as gone.  That is also what an observer does: it
reads the rows after the change and sends their state then (several changes of one row
in a batch reach clients as its latest state).  One statement per collection per batch
(``Collection.read``), never one per change.

Messages (Meteor's ``ddp-server``; ``fields`` values EJSON-ready, :func:`ddpctl.ddp.ejson.to_json_value`
gives their wire form):

- insert: ``added`` with every field of the document;
- update: ``changed`` with the published fields the change touched (the changelog's
  columns, as document field names: a foreign key's ``<name>_id``, a many-to-many
  field's ``<name>_ids``), at their current values; none if it touched only excluded or
  unpublished columns (clients then get nothing);
- delete: ``removed`` (the id only);
- a row gone by the time it is read, a TRUNCATE, a table with no Collection: no message.

An observer sends a message to the subscribers whose publication holds the document (and,
with a Collection's ``visible``, who may see it); this module shows what those receive.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, NamedTuple

from django.db import DataError, ProgrammingError

from .changelog import ChangeRow
from .collection import Collection

__all__ = ["ChangeDocument", "describe_changes", "document_fields"]

logger = logging.getLogger(__name__)


class ChangeDocument(NamedTuple):
    """One change as clients see it.

    ``collection``: the Collection of the change's table, or None (a table no Collection
    publishes).  ``doc_id``: the document id clients get (``None`` for a TRUNCATE).
    ``fields``: for an update, the document fields it touched (excluded and unpublished
    columns left out); None for other operations.  ``document``: the current fields of an
    inserted or updated row, or None if it is gone (``gone``), the change is not an insert
    or update, values were not read, or ``error`` says why they could not be.  ``message``:
    the DDP message an observer would send, or None (nothing sent)."""

    collection: Collection | None
    doc_id: str | None
    fields: list[str] | None
    document: dict[str, Any] | None
    gone: bool
    message: dict[str, Any] | None
    error: str | None = None


def document_fields(collection: Collection) -> dict[str, str]:
    """``{column: document field}`` of ``collection``'s published columns: a plain field's
    column -> its name, a foreign key's -> ``<name>_id``, a many-to-many field's
    ``<name>_ids`` (what its changes record) -> itself.  The primary key and excluded
    fields are not in it."""
    found = {field.column: field.name for field in collection.plain}
    found.update((field.column, field.attname) for field in collection.foreign)
    found.update((f"{field.name}_ids", f"{field.name}_ids") for field in collection.many)
    return found


def describe_changes(changes: Iterable[ChangeRow], by_table: dict[str, Collection],
                     read_values: bool = True, using: str = "default") -> list[ChangeDocument]:
    """Each of ``changes`` as clients see it (``by_table``: the Collections by table,
    :meth:`CollectionRegistry.by_table`), in order.  With ``read_values`` the documents of
    inserts and updates are read now, one :meth:`Collection.read` per collection for all of
    its changes; without, ``document`` and ``message`` are None but for deletes.

    A value with no DDP mapping (``TypeError``), a key that cannot be the table's
    (``ValueError``) or a statement PostgreSQL refuses (``ProgrammingError``,
    ``DataError``: a permission, a dropped column) leave that collection's changes without
    values, ``error`` saying why (logged as a warning).  Connection errors
    (``OperationalError``, ``InterfaceError``) propagate: call again on a new connection."""
    changes = list(changes)
    ids: dict[tuple[str, str], str | None] = {}  # (table, changelog key) -> document id
    wanted: dict[str, dict[str, Any]] = {}  # table -> {document id: primary key} to read
    errors: dict[tuple[str, str], str] = {}
    for change in changes:
        collection = by_table.get(change.table)
        if collection is None or change.row is None or (change.table, change.row) in ids:
            continue
        try:
            pk = collection.pk_from_id(change.row)
        except (ValueError, TypeError) as exc:
            logger.warning("%s: change %d: %s", collection.name, change.id, exc)
            ids[(change.table, change.row)] = None
            errors[(change.table, change.row)] = str(exc)
            continue
        doc_id = ids[(change.table, change.row)] = collection.doc_id(pk)
        if change.op in "IU" and read_values:
            wanted.setdefault(change.table, {})[doc_id] = pk
    documents: dict[tuple[str, str], dict[str, Any] | None] = {}
    table_errors: dict[str, str] = {}
    for table, keys in wanted.items():
        collection = by_table[table]
        try:
            found = collection.read(keys, using=using)
        except (TypeError, ValueError, ProgrammingError, DataError) as exc:
            text = f"{type(exc).__name__}: {str(exc).strip()}"
            logger.warning("%s: documents not read: %s", collection.name, text)
            table_errors[table] = text
            continue
        for doc_id, fields in found.items():
            documents[(table, doc_id)] = fields
    published = {table: document_fields(by_table[table]) for table in {c.table for c in changes}
                 if table in by_table}
    return [_describe(change, by_table.get(change.table), published.get(change.table, {}), ids, documents,
                      errors.get((change.table, change.row or "")) or table_errors.get(change.table),
                      read_values)
            for change in changes]


def _describe(change: ChangeRow, collection: Collection | None, published: dict[str, str],
              ids: dict[tuple[str, str], str | None], documents: dict[tuple[str, str], dict[str, Any] | None],
              error: str | None, read_values: bool) -> ChangeDocument:
    if collection is None:
        return ChangeDocument(None, change.row, change.fields, None, False, None)
    doc_id = None if change.row is None else ids.get((change.table, change.row))
    fields = None
    if change.op == "U":
        fields = [published[c] for c in change.fields or () if c in published]
    if doc_id is None or error is not None:  # a TRUNCATE, or a key or read that failed
        return ChangeDocument(collection, doc_id, fields, None, False, None, error)
    if change.op == "D":
        message = {"msg": "removed", "collection": collection.name, "id": doc_id}
        return ChangeDocument(collection, doc_id, fields, None, False, message)
    if not read_values:
        return ChangeDocument(collection, doc_id, fields, None, False, None)
    document = documents.get((change.table, doc_id))
    if document is None:
        return ChangeDocument(collection, doc_id, fields, None, True, None)
    message = None
    if change.op == "I":
        message = {"msg": "added", "collection": collection.name, "id": doc_id, "fields": document}
    else:
        changed = {name: document[name] for name in fields or () if name in document}
        if changed:
            message = {"msg": "changed", "collection": collection.name, "id": doc_id, "fields": changed}
    return ChangeDocument(collection, doc_id, fields, document, False, message)
