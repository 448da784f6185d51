"""Which tables a queryset reads, as PostgreSQL plans it.

An observer must hear about every change that can alter its result: a change to its own
table, but also to a joined table (``author__email``), a subquery's table
(``id__in=Membership.objects.values("note")``), a table behind a view, ``RawSQL`` or
``extra()``.  Rather than re-parse Django's SQL, :func:`tables_read` asks PostgreSQL:
``EXPLAIN (FORMAT JSON)`` names every relation the plan scans, with views already
expanded into their base tables and joins the planner proved useless already removed
(a change there cannot alter the result).  Tables read only inside a non-inlined SQL
function are not seen; list their models in ``DDPCTL_CAPTURE_MODELS``.

:func:`traced_tables` is the static part, used by ``ddpctl migrate``: the tables that the
class-level ``queries`` of publications and each Collection's ``visible()`` (traced with a
stand-in logged-in user and with ``None``) read.
"""
from __future__ import annotations

import logging
import uuid
from collections import Counter
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import QuerySet

__all__ = ["depends_on_other_rows", "relation_scans", "tables_read", "traced_tables"]

logger = logging.getLogger(__name__)
_SYSTEM_SCHEMAS = {"pg_catalog", "information_schema", "pg_toast"}  # never captured


def tables_read(queryset: QuerySet) -> frozenset[str]:
    """Names (``pg_class.relname``, like ``Meta.db_table``) of the tables ``queryset``'s SQL
    reads, system catalogs left out; empty for a queryset that cannot match anything.
    Database errors propagate."""
    return frozenset(relation_scans(queryset))


def relation_scans(queryset: QuerySet) -> Counter[str]:
    """How many times ``queryset``'s plan scans each table (``{relname: scans}``; a
    self-join or a subquery on the queryset's own table counts it twice), system catalogs
    left out; empty for a queryset that cannot match anything.  Database errors propagate."""
    if queryset.query.is_empty():
        return Counter()
    try:
        sql, params = queryset.query.sql_with_params()
    except EmptyResultSet:
        return Counter()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON, COSTS false, VERBOSE) {sql}", params)
        plan = cursor.fetchone()[0]
    found: Counter[str] = Counter()
    _relations(plan, found)
    return found


def depends_on_other_rows(queryset: QuerySet, scans: Counter[str]) -> bool:
    """True when whether a row is in ``queryset``'s result can change without a change to
    that row or to another table: its own table is scanned more than once (``scans``, from
    :func:`relation_scans`: a self-join such as ``author__books__pages__gt``, a subquery or
    ``Exists`` on it), ``DISTINCT ON`` keeps one row of several, or a window function
    compares rows.  Such a queryset is read whole, not only at the changed keys."""
    query = queryset.query
    return (scans.get(queryset.model._meta.db_table, 0) > 1 or bool(query.distinct_fields)
            or any(getattr(a, "contains_over_clause", False) for a in query.annotations.values()))


def _relations(node: Any, found: Counter[str]) -> None:
    if isinstance(node, dict):
        name = node.get("Relation Name")
        if name and node.get("Schema") not in _SYSTEM_SCHEMAS:
            found[name] += 1
        for value in node.values():
            if isinstance(value, (dict, list)):
                _relations(value, found)
    elif isinstance(node, list):
        for item in node:
            _relations(item, found)


def stand_in_user() -> Any:
    """An unsaved user with a primary key, to trace ``visible()`` as a logged-in user."""
    from django.contrib.auth import get_user_model

    model = get_user_model()
    for candidate in (0, uuid.UUID(int=0), "0"):
        try:
            return model(pk=model._meta.pk.to_python(candidate))
        except Exception:
            logger.debug("a %s key cannot be %r", model._meta.label, candidate, exc_info=True)
    return model(pk=0)


def traced_tables(using: str = "default") -> dict[str, str]:
    """``{table: what reads it}`` for the statically known querysets: each Collection's
    ``visible()`` for a stand-in user and for ``None``, and publications' class-level
    ``queries``.  A trace that raises is logged and skipped (its tables are then captured
    by the serving node when first needed)."""
    from .collection import collections
    from .publication import static_querysets

    traces: list[tuple[str, Any]] = []
    user = stand_in_user()
    for collection in collections.all():
        base = collection.model._default_manager.using(using).all()
        for who, as_user in (("a logged-in user", user), ("no user", None)):
            traces.append((f"{type(collection).__name__}.visible() for {who}",
                           lambda c=collection, b=base, u=as_user: c.visible(b, u)))
    for label, queryset in static_querysets():
        traces.append((label, lambda q=queryset: q.using(using)))
    out: dict[str, str] = {}
    for label, make in traces:
        try:
            tables = tables_read(make())
        except Exception as exc:
            logger.info("could not trace the tables of %s (%s: %s); they are captured when first served",
                        label, type(exc).__name__, str(exc).strip())
            continue
        for table in tables:
            out.setdefault(table, label)
    return out
