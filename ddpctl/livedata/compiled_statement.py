"""A queryset's statement compiled once, then run again with one parameter changed.

Django builds and compiles a queryset's SQL each time it runs it.  The live-data reads by
primary key (:meth:`ddpctl.livedata.collection.Collection.read`, one per batch of changes)
run statements whose text is the same every time but for one parameter, the key array of
:func:`ddpctl.livedata.collection.keys_in`; building and compiling them each time was about
0.55 of the 0.74 ms of CPU the read of one ``Book`` (a many-to-many field: two statements)
took.  A :class:`CompiledStatement` keeps that text and what Django would convert the rows with, and
runs it through the alias's cursor (so ``execute_wrapper``s and the debug cursor see it) with
only that parameter replaced.
"""
from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import QuerySet
from django.db.models.query import ModelIterable, ValuesListIterable
from django.db.models.sql.compiler import SQLCompiler

logger = logging.getLogger(__name__)

__all__ = ["CompiledStatement"]


class CompiledStatement:
    """The SQL of a queryset compiled with a sentinel parameter, to run again with any
    value in its place: :meth:`rows` gives the rows Django's iterable would have read from
    the compiler (``results_iter``: the same columns, through the same converters), as
    lists or tuples.  ``select`` and ``klass_info`` are the compiler's (they describe the
    rows); the compiler itself is not kept (it holds the database connection wrapper of
    the greenlet that compiled it)."""

    def __init__(self, compiler: SQLCompiler, sql: str, params: tuple[Any, ...], at: int,
                 tuples: bool) -> None:
        self.select = compiler.select
        self.klass_info = compiler.klass_info
        self.sql = sql
        self.params = params
        self.at = at  # the sentinel's place in params
        self.tuples = tuples
        self.col_count = compiler.col_count if compiler.has_extra_select else None
        fields = [s[0] for s in compiler.select[0:compiler.col_count]]
        self.converters = list(compiler.get_converters(fields).items())

    @classmethod
    def of(cls, queryset: QuerySet, sentinel: object) -> CompiledStatement | None:
        """``queryset`` (built with ``sentinel`` as one of its parameters) compiled; None
        when it cannot be run again with another value: ``sentinel`` not exactly once in
        the compiled parameters, an empty result known without running it, rows not read
        as they come (an iterable other than model instances' or a ``values_list`` in its
        select order, a composite field)."""
        query = queryset.query
        if queryset._iterable_class is ModelIterable:
            tuples = False
        elif queryset._iterable_class is ValuesListIterable and queryset._fields:
            names = [*query.extra_select, *query.values_select, *query.annotation_select]
            fields = [*queryset._fields, *(f for f in query.annotation_select if f not in queryset._fields)]
            if fields != names:
                return None
            tuples = True
        else:
            return None
        if query.combinator or query.is_empty():
            return None
        compiler = query.get_compiler(using=queryset.db)
        try:
            sql, params = compiler.as_sql()
        except EmptyResultSet:  # Django runs nothing for it: neither does the caller then
            return None
        places = [i for i, param in enumerate(params) if param is sentinel]
        if not sql or len(places) != 1:
            logger.debug("%s: not compiled once (no statement, or its parameter in it %d times)",
                         query.model._meta.label, len(places))
            return None
        if compiler.has_composite_fields([s[0] for s in compiler.select[0:compiler.col_count]]):
            return None
        return cls(compiler, sql, tuple(params), places[0], tuples)

    def rows(self, value: Any, using: str) -> list[Any]:
        """The rows of the statement with ``value`` for the sentinel, on ``using``'s
        connection, converted as Django converts them (the converters the alias's backend
        and fields gave at compile time, called with the current connection, as
        ``results_iter`` calls them).  Database errors propagate."""
        params = list(self.params)
        params[self.at] = value
        connection = connections[using]
        with connection.cursor() as cursor:
            cursor.execute(self.sql, tuple(params))
            rows = cursor.fetchall()
        if self.col_count is not None:
            rows = [row[:self.col_count] for row in rows]
        if self.converters:
            rows = [list(row) for row in rows]
            for row in rows:
                for at, (converters, expression) in self.converters:
                    value = row[at]
                    for converter in converters:
                        value = converter(value, expression, connection)
                    row[at] = value
            if self.tuples:
                rows = [tuple(row) for row in rows]
        return rows
