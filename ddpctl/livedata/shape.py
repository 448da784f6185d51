"""Query shapes: querysets that compile to the same SQL but for their parameters.

The cursors of many observers often differ only in a value -- the same publication
subscribed with another param, or a ``Collection.visible`` that filters by the user.  Their
SQL is one *shape*; each cursor is a *cohort* of it with its own parameter values.  A shape
turns its SQL into one statement for any number of cohorts, Hasura's "subscription
multiplexing" (its docs, under that name): every ``%s`` of the shape becomes a column of a
``VALUES`` list holding each cohort's values, joined laterally::

    SELECT q.* FROM (VALUES (0, 'a@x'::character varying), (1, 'b@x'::character varying))
                    AS "_ddpctl_v"("cohort", "p1")
    CROSS JOIN LATERAL (
        SELECT "book"."id" AS "_ddpctl_key", ("_ddpctl_v"."cohort") AS "_ddpctl_cohort"
        FROM "book" INNER JOIN "author" ON ("book"."author_id" = "author"."id")
        WHERE "author"."email" = "_ddpctl_v"."p1") AS q
    WHERE q."_ddpctl_key" = ANY('{7,9}'::bigint[])

It returns ``(primary key, cohort)`` pairs: of the given primary keys only (a batch's changed
rows), or of the whole results.  Documents are read apart, once per row (see
:mod:`.multiplex`), since a document is a function of its row alone.

Parameter types.  PostgreSQL infers the type of each parameter from where it stands when it
prepares the shape's statement (``PREPARE`` and ``pg_prepared_statements.parameter_types``,
once per shape); each ``VALUES`` column is cast to that type, as the parameter would be in
the cursor's own statement.

A cursor has no shape (it refreshes alone, :attr:`Cursor.alone`) when its model has a
composite primary key, its Collection overrides ``serialize`` (a document might not be a
function of its row), its queryset yields no model instances (``values()``), the shape's
statement drops or reorders parameters, or PostgreSQL cannot prepare it.
"""
from __future__ import annotations

import datetime
import itertools
import logging
import math
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from django.core.exceptions import EmptyResultSet
from django.db import DatabaseError, connections, transaction
from django.db.models import F, IntegerField, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.query import ModelIterable

from ..database_errors import is_connection_error
from .collection import Collection
from .reads import depends_on_other_rows, relation_scans

__all__ = ["Shape", "ShapeRegistry", "NotMultiplexable", "shapes", "placeholders", "cohort_key", "cohorts_of"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

KEY = "_ddpctl_key"
COHORT = "_ddpctl_cohort"
VALUES = '"_ddpctl_v"'
MAX_SHAPES = 4096  # shapes kept for reuse; a cursor keeps its own shape alive


class NotMultiplexable(Exception):
    """Why a queryset cannot be refreshed with others (the message says it)."""


def placeholders(sql: str) -> list[str]:
    """``sql`` (psycopg2's ``format`` paramstyle, as Django writes it) split at its ``%s``
    placeholders: ``n + 1`` pieces for ``n`` parameters, ``%%`` kept as is.

    Raises :class:`NotMultiplexable` for any other ``%`` sequence (psycopg2 would too)."""
    pieces, start, i = [], 0, 0
    while (i := sql.find("%", i)) != -1:
        following = sql[i + 1:i + 2]
        if following == "%":
            i += 2
        elif following == "s":
            pieces.append(sql[start:i])
            i += 2
            start = i
        else:
            raise NotMultiplexable(f"its SQL holds {sql[i:i + 2]!r}, not a %s placeholder")
    pieces.append(sql[start:])
    return pieces


def cohort_key(params: tuple[Any, ...]) -> Hashable | None:
    """What makes two parameter tuples one cohort: equal values of one type (1 and True are
    not); None if a value is unhashable (its cursor is a cohort of its own)."""
    key = tuple((type(v), v) for v in params)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def cohorts_of(members: Iterable[T], params: Callable[[T], tuple[Any, ...]],
               key: Callable[[T], Hashable | None]) -> tuple[list[tuple[Any, ...]], list[list[T]]]:
    """``(cohorts, members of each)``: ``members`` grouped by :func:`cohort_key` (``key(member)``,
    precomputed), the cohorts (``params(member)``) numbered in order of appearance."""
    cohorts: list[tuple[Any, ...]] = []
    grouped: list[list[T]] = []
    numbers: dict[Any, int] = {}
    for member in members:
        k = key(member)
        number = len(cohorts) if k is None else numbers.setdefault(k, len(cohorts))
        if number == len(cohorts):
            cohorts.append(params(member))
            grouped.append([])
        grouped[number].append(member)
    return cohorts, grouped


def _array_element(value: Any) -> str:
    """``value`` as an element of a PostgreSQL array literal (its text form, quoted), what
    the column type's input function reads as psycopg2's literal of it would be read;
    ``TypeError`` for a value with no such text form here (lists, JSON, adapters)."""
    if value is None:
        return "NULL"
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "t" if value else "f"
    elif isinstance(value, (int, Decimal, uuid.UUID)):
        text = str(value)
    elif isinstance(value, float):
        # psycopg2 writes -0.0 as `` -0.0``: unary minus on a numeric zero, read as +0.
        text = ("0.0" if value == 0 else repr(value)) if math.isfinite(value) else {
            "nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[repr(value)]
    elif isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        text = value.isoformat()
    elif isinstance(value, datetime.timedelta):
        text = f"{value.days} days {value.seconds} seconds {value.microseconds} microseconds"
    elif isinstance(value, (bytes, bytearray, memoryview)):
        text = "\\x" + bytes(value).hex()
    else:
        raise TypeError(type(value).__name__)
    if "\0" in text:
        raise TypeError("NUL")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_LITERAL_TYPES = {  # value_kind -> the type of psycopg2's literal (untyped kinds: absent)
    "bool": "boolean", "Decimal": "numeric", "UUID": "uuid", "bytes": "bytea", "date": "date",
    "datetime": "timestamp with time zone", "naive datetime": "timestamp without time zone",
    "time": "time with time zone", "naive time": "time without time zone", "timedelta": "interval",
}
_INTEGER_RANGES = {"smallint": 2**15, "integer": 2**31, "bigint": 2**63}


def value_kind(value: Any) -> str:
    """The kind of a parameter value, as far as its SQL type goes (a shape's parameters have
    one kind each: a queryset filtering by 1 and one filtering by 0.5 are two shapes)."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, datetime.datetime):
        return "datetime" if value.utcoffset() is not None else "naive datetime"
    if isinstance(value, datetime.time):
        return "time" if value.utcoffset() is not None else "naive time"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(value, uuid.UUID):
        return "UUID"
    if isinstance(value, str):
        return "str"
    return type(value).__name__  # date, timedelta, Decimal, list, adapters...


def _fits(values: list[Any], cast: str) -> bool:
    """Whether every integer of ``values`` (None aside) is in the range of ``cast``; True for
    a non-integer type (numeric, float), which takes any."""
    bound = _INTEGER_RANGES.get(cast)
    if bound is None:
        return cast in ("numeric", "real", "double precision")
    return all(v is None or -bound <= v < bound for v in values)


class Shape:
    """One SQL shape of one collection, and how to query it for many cohorts at once.

    ``number``: a process-wide serial (logs, ``ddpctl subs ls``); ``tables``: the tables
    the shape's SQL reads (:func:`.reads.relation_scans` of the first cursor); ``sliced``: the
    queryset has a LIMIT/OFFSET (each cohort's own, in the lateral subquery); ``whole``:
    a row's presence depends on other rows of its table
    (:func:`.reads.depends_on_other_rows`), so any change to the table re-reads whole results;
    ``every_row``: each cohort's result is every row of the collection's table (no filter,
    join, slice, ``DISTINCT``, grouping or set operation, no parameter), so a changed row
    is in it exactly when it exists: :mod:`.multiplex` then reads the changed rows
    without asking for keys first (one statement less per batch).
    """

    _numbers = itertools.count(1)

    def __init__(self, collection: Collection, queryset: QuerySet, params: tuple[Any, ...]) -> None:
        self.number = next(self._numbers)
        self.collection = collection
        self.using = queryset.db
        self.sliced = queryset.query.is_sliced
        self.broken: str | None = None  # why it refreshes cursor by cursor now, if it does
        self.template = self._template(queryset, params)
        sql, _ = self.template.query.sql_with_params()
        self._pieces = placeholders(sql)
        self._inferred, self._key_type = self._infer_types()
        self._kinds = tuple(map(value_kind, params))
        scans = relation_scans(queryset)
        self.tables = frozenset(scans) | {collection.table}
        self.whole = depends_on_other_rows(queryset, scans)
        query = queryset.query
        self.every_row = (not params and not self.sliced and not self.whole and not query.where
                          and not query.distinct and query.group_by is None and not query.combinator
                          and self.tables == {collection.table})

    def __repr__(self) -> str:
        return f"<Shape {self.number} of {self.collection.name}>"

    def _template(self, queryset: QuerySet, params: tuple[Any, ...]) -> QuerySet:
        """The queryset of ``(key, cohort)`` pairs: unordered unless sliced or ``DISTINCT
        ON`` (whose ORDER BY picks the rows kept), and with the
        same parameters, in the same order, as ``queryset``'s own SQL (else the shape's
        parameters would not line up with each cohort's)."""
        keyed = queryset.annotate(**{
            KEY: F("pk"),
            COHORT: RawSQL(f'{VALUES}."cohort"', (), output_field=IntegerField()),
        }).values_list(KEY, COHORT)
        # ORDER BY is waste unless it picks rows: a slice, or DISTINCT ON (the first row of each)
        picks = self.sliced or bool(queryset.query.distinct_fields)
        candidates = [keyed] if picks else [keyed.order_by(), keyed]
        for template in candidates:
            try:
                _, template_params = template.query.sql_with_params()
            except EmptyResultSet:  # pragma: no cover - the cursor's own SQL compiled
                raise NotMultiplexable("its key query matches nothing") from None
            if tuple(template_params) == params:
                return template
            unequal = [type(a).__name__ for a, b in zip(template_params, params, strict=False)
                       if a is not b and a != b and type(a) is type(b)]
            if len(template_params) == len(params) and unequal:
                raise NotMultiplexable(f"a parameter value ({unequal[0]}) is not equal to itself when "
                                       "the query is compiled again (e.g. Django's Jsonb, for a "
                                       "JSONField lookup)")
        raise NotMultiplexable("its SQL's parameters do not survive selecting only the key "
                               "(parameters in its SELECT list)")

    def _infer_types(self) -> tuple[list[str], str]:
        """The PostgreSQL types of the shape's parameters, and of the key array."""
        n = len(self._pieces) - 1
        inner = "".join(piece.replace("%%", "%") + (f"${i + 1}" if i < n else "")
                        for i, piece in enumerate(self._pieces))
        name = f"ddpctl_shape_{self.number}"
        statement = (f'PREPARE {name} AS SELECT q.* FROM (VALUES (0)) AS {VALUES}("cohort") '
                     f'CROSS JOIN LATERAL ({inner}) AS q WHERE q."{KEY}" = ANY(${n + 1})')
        try:
            with transaction.atomic(using=self.using), connections[self.using].cursor() as cursor:
                cursor.execute(statement)
                cursor.execute("SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = %s",
                               [name])
                types = cursor.fetchone()[0]
                cursor.execute(f"DEALLOCATE {name}")
        except DatabaseError as exc:
            if is_connection_error(exc):
                raise
            raise NotMultiplexable(f"PostgreSQL cannot prepare its multiplexed form: "
                                   f"{str(exc).strip().splitlines()[0]}") from exc
        casts = ["text" if t == "unknown" else t for t in types[:n]]
        return casts, types[n]

    def statement(self, cohorts: Sequence[tuple[Any, ...]],
                  keys: Sequence[str] | None) -> tuple[str, list[Any]]:
        """``(sql, params)`` for ``cohorts`` (each a cursor's parameter values; the cohort
        number is the index) and ``keys`` (primary keys in PostgreSQL's text form, the
        changelog's; None for the whole results).  ``cohorts`` must not be empty.

        The cohorts go as one array per parameter (``unnest``: one short literal each,
        cheap to send and parse) when every value has a text form and no parameter is an
        array itself; else as a ``VALUES`` list of psycopg2's literals."""
        casts = self._casts(cohorts)
        n = len(casts)
        columns = ", ".join(['"cohort"', *(f'"p{i}"' for i in range(1, n + 1))])
        inner = "".join(piece + (f'{VALUES}."p{i + 1}"' if i < n else "")
                        for i, piece in enumerate(self._pieces))
        arrays = self._arrays(cohorts, casts)
        if arrays is not None:
            source = "unnest(" + ", ".join(["%s::integer[]", *(f"%s::{cast}[]" for cast in casts)]) + ")"
            params: list[Any] = [arrays[0], *arrays[1:]]
        else:
            row = "(" + ", ".join(["%s", *(f"(%s)::{cast}" for cast in casts)]) + ")"  # -2^63 too
            source = f"(VALUES {', '.join([row] * len(cohorts))})"
            params = [value for number, cohort in enumerate(cohorts) for value in (number, *cohort)]
        sql = f"SELECT q.* FROM {source} AS {VALUES}({columns}) CROSS JOIN LATERAL ({inner}) AS q"
        if keys is not None:
            sql += f' WHERE q."{KEY}" = ANY(%s::{self._key_type})'
            params.append(list(keys))
        return sql, params

    def _casts(self, cohorts: Sequence[tuple[Any, ...]]) -> list[str]:
        """The type each parameter is cast to: the type of psycopg2's literal of its values
        (a float's ``0.5`` is ``numeric``, a datetime's ``'...'::timestamptz``), as the
        cursor's own statement has it, and where that literal has no type of its own (a
        string, NULL) the type PostgreSQL infers for the parameter's place.  Integers take
        the inferred integer type when every value fits it (else ``bigint``, ``numeric``),
        as PostgreSQL types an integer literal by its size."""
        casts = []
        for i, (kind, inferred) in enumerate(zip(self._kinds, self._inferred, strict=True)):
            if kind == "int":
                values = [cohort[i] for cohort in cohorts]
                cast = next((t for t in (inferred, "bigint", "numeric") if _fits(values, t)), "numeric")
            elif kind == "float":
                finite = all(math.isfinite(cohort[i]) for cohort in cohorts)
                cast = "numeric" if finite else "double precision"  # psycopg2: 'NaN'::float
            else:
                cast = _LITERAL_TYPES.get(kind, inferred)
            casts.append(cast)
        return casts

    def _arrays(self, cohorts: Sequence[tuple[Any, ...]], casts: list[str]) -> list[str] | None:
        """Array literals: the cohort numbers, then each parameter's values; None if they
        cannot all be written so."""
        if any(cast.endswith("]") for cast in casts):
            return None
        try:
            columns = [[_array_element(v) for v in values] for values in zip(*cohorts, strict=True)]
        except TypeError:
            return None
        numbers = "{" + ",".join(map(str, range(len(cohorts)))) + "}"
        return [numbers, *("{" + ",".join(column) + "}" for column in columns)]

    def query(self, cohorts: Sequence[tuple[Any, ...]], keys: Sequence[str] | None) -> list[tuple[Any, int]]:
        """``[(primary key, cohort number)]`` of the rows each cohort's query yields (limited
        to ``keys`` unless None), keys converted as Django converts the model's primary key.
        Database errors propagate."""
        queryset = self.template.all()
        compiler = queryset.query.get_compiler(using=self.using)
        compiler.as_sql()  # sets up the select list, its converters and extra ORDER BY columns
        sql, params = self.statement(cohorts, keys)
        compiler.as_sql = lambda *args, **kwargs: (sql, params)
        key_at, cohort_at = compiler.annotation_col_map[KEY], compiler.annotation_col_map[COHORT]
        return [(row[key_at], row[cohort_at]) for row in compiler.results_iter()]


class ShapeRegistry:
    """The shapes of this process, found by their SQL (at most :data:`MAX_SHAPES` kept)."""

    def __init__(self) -> None:
        self._shapes: OrderedDict[tuple[Any, ...], Shape | str] = OrderedDict()

    def resolve(self, collection: Collection, queryset: QuerySet) -> tuple[Shape | None, tuple[Any, ...]]:
        """``(shape, this queryset's parameter values)`` for a cursor; ``(None, ())`` for a
        queryset that cannot match anything.  :class:`NotMultiplexable` if it has no shape.
        May query the database (for a new shape); connection errors propagate."""
        if queryset.query.is_empty():
            return None, ()
        try:
            sql, params = queryset.query.sql_with_params()
        except EmptyResultSet:
            return None, ()
        params = tuple(params)
        key = (queryset.db, collection.name, type(collection), queryset.model, sql,
               tuple(map(str, queryset._prefetch_related_lookups)), tuple(map(value_kind, params)))
        found = self._shapes.get(key)
        if found is None:
            made = self._make(collection, queryset, params)  # may yield: it asks PostgreSQL
            found = self._shapes.get(key)  # so another cursor may have made it meanwhile
            if found is None:
                found = self._shapes[key] = made
            while len(self._shapes) > MAX_SHAPES:
                self._shapes.popitem(last=False)
        else:
            self._shapes.move_to_end(key)
        if isinstance(found, str):
            raise NotMultiplexable(found)
        return found, params

    @staticmethod
    def _make(collection: Collection, queryset: QuerySet, params: tuple[Any, ...]) -> Shape | str:
        """A new shape, or why there is none."""
        opts = queryset.model._meta
        if not opts.pk.column:
            reason = f"{opts.label} has a composite primary key"
        elif type(collection).serialize is not Collection.serialize:
            reason = f"{type(collection).__name__} overrides serialize()"
        elif queryset._iterable_class is not ModelIterable:
            reason = "its queryset does not yield model instances"
        else:
            try:
                shape = Shape(collection, queryset, params)
            except NotMultiplexable as exc:
                reason = str(exc)
            else:
                logger.info("%r: observers of this SQL refresh together: %s", shape,
                            shape.template.query.sql_with_params()[0][:300])
                return shape
        logger.info("a %s query refreshes alone (%s): %s", collection.name, reason,
                    queryset.query.sql_with_params()[0][:300])
        return reason


shapes = ShapeRegistry()
