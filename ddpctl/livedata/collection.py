"""Collections: how a Django model appears to DDP clients.

    class Books(Collection):
        model = Book
        exclude = ["internal_notes"]

        def visible(self, queryset, user):       # row visibility, applied before anything is sent
            return queryset.filter(owner=user) if user else queryset.none()

Defining the class registers it (and its table for change capture).  The collection name
defaults to ``app_label.modelname``.

Document ids: a primary key ``pk`` is sent as ``str(pk)``: integer 42 -> ``"42"``, UUID ->
its canonical text; a composite primary key (``CompositePrimaryKey``) as the JSON array of
its parts' text, ``(1, "a")`` -> ``'["1", "a"]'`` (what the capture triggers record).
Foreign keys go out as ``<name>_id`` holding that string; many-to-many fields as
``<name>_ids`` lists of them.  Every other field value goes through
``ddpctl.values.to_ddp_value`` (the table in README.rst, "Document ids and values").
"""
from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from functools import cached_property
from typing import Any, ClassVar

from django.core.exceptions import ValidationError
from django.db import connections, models
from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.models import Model, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.fields.files import FieldFile, FileDescriptor, ImageFieldFile
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.manager import BaseManager
from django.db.models.query import ModelIterable
from django.db.models.query_utils import DeferredAttribute
from django.db.models.signals import post_init

from ..values import to_ddp_value
from .compiled_statement import CompiledStatement

logger = logging.getLogger(__name__)
_PLAIN = frozenset({str, int, bool, float, type(None)})  # what to_ddp_value returns as it is

# a by-primary-key statement compiled once: (statement, its rows' layout, the row function)
_Compiled = tuple[CompiledStatement, tuple[int, ...], Callable[..., dict[str, dict[str, Any]]]]

__all__ = ["Collection", "CollectionRegistry", "collections", "to_ddp_value"]


class Collection:
    """How a Django model is published: one Collection per model, registered by defining
    the subclass (``register=False`` in the class arguments to skip that).

    Class attributes:

    * ``model`` (required): the Django model; a second Collection for the same model raises
      ``ValueError`` at class definition.
    * ``name``: the DDP collection name, default ``"app_label.modelname"``.
    * ``fields`` / ``exclude``: the model fields published (names); default every concrete
      field and many-to-many field; the primary key is the document id, never a field.

    A document is ``serialize(row)``: ``(document id, {field: EJSON value})`` with a foreign
    key as ``<name>_id`` (the related document id or ``None``) and a many-to-many field as
    ``<name>_ids`` (a list of document ids); values as in :func:`ddpctl.values.to_ddp_value`.
    Override ``visible(queryset, user)`` to restrict rows per user (every observer of the
    model is then per user), ``serialize`` to compute fields (rows are then read as model
    instances).  The model's table must exist (system check ``ddpctl.E007``) and gets
    change-capture triggers from ``ddpctl migrate``.
    """

    model: ClassVar[type[Model]]
    name: ClassVar[str] = ""
    fields: ClassVar[list[str] | None] = None
    exclude: ClassVar[list[str]] = []

    def __init_subclass__(cls, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not getattr(cls, "model", None):
            return
        if not cls.name:
            cls.name = f"{cls.model._meta.app_label}.{cls.model._meta.model_name}"
        if register:
            collections.register(cls)

    def __init__(self) -> None:
        opts = self.model._meta
        wanted = set(self.fields) if self.fields is not None else None
        excluded = set(self.exclude)

        def keep(name: str) -> bool:
            return (wanted is None or name in wanted) and name not in excluded

        self.plain: list[models.Field] = []
        self.foreign: list[models.Field] = []
        for field in opts.concrete_fields:
            if field.primary_key or not keep(field.name):
                continue
            (self.foreign if field.is_relation else self.plain).append(field)
        self.many: list[models.ManyToManyField] = [f for f in opts.local_many_to_many if keep(f.name)]
        self._labels = {field.name: f"{opts.label}.{field.name}" for field in self.plain}
        self.table = opts.db_table
        # The tables a document's fields come from: its own and, with multi-table
        # inheritance, its parents' (whose primary key is the same).
        self.row_tables = (self.table, *(parent._meta.db_table for parent in opts.get_parent_list()))

    @property
    def user_dependent(self) -> bool:
        """True if ``visible`` is overridden (each user then gets their own observer)."""
        return type(self).visible is not Collection.visible

    def visible(self, queryset: QuerySet, user: Any) -> QuerySet:
        """The rows of ``queryset`` that ``user`` (a User or ``None``) may see."""
        return queryset

    def prepare(self, queryset: QuerySet) -> QuerySet:
        """The queryset as observers run it (many-to-many prefetched)."""
        return queryset.prefetch_related(*(f.name for f in self.many)) if self.many else queryset

    def read(self, keys: dict[str, Any], using: str = "default") -> dict[str, dict[str, Any] | None]:
        """``{document id: fields}`` of the rows ``keys`` names (``{document id: primary
        key}``), read by primary key (the model's base manager, :meth:`prepare`d) in
        statements of at most :attr:`READ_CHUNK` keys; None for a row that is gone.
        Database errors and :meth:`serialize`'s ``TypeError`` propagate.

        When the keys go as one array parameter (:func:`keys_in`) and the rows are read as
        tuples (:attr:`row_reader`; the base manager Django's plain ``Manager``; neither
        :meth:`prepare` nor :meth:`documents` overridden), the statements are compiled once
        per collection, database alias and key type and afterwards only run with the new
        array (:class:`~ddpctl.livedata.compiled_statement.CompiledStatement`): building
        and compiling them each time was three quarters of a one-row read's CPU."""
        docs: dict[str, dict[str, Any] | None] = dict.fromkeys(keys)
        values = list(keys.values())
        pk = self.model._meta.pk
        connection = connections[using]
        reader = self._compiled_reader
        for start in range(0, len(values), self.READ_CHUNK):
            chunk = values[start:start + self.READ_CHUNK]
            if pk.column:  # not a CompositePrimaryKey
                chunk = keys_in(chunk, prepared_keys(pk, chunk, connection), pk, connection)
                if (reader is not None and isinstance(chunk, RawSQL)
                        and not post_init.has_listeners(self.model)):
                    found = reader.by_keys(chunk, using)
                    if found is not None:
                        docs.update(found)
                        continue
            docs.update(self.documents(self._by_keys(chunk, using)))
        return docs

    def _by_keys(self, keys: list[Any] | RawSQL, using: str) -> QuerySet:
        """The queryset :meth:`read` reads (``keys``: the right-hand side of ``pk__in``),
        unordered (:meth:`read` keys its result by ``keys``): the model's ``ordering`` is
        neither sorted on nor joined for, nor kept in a statement compiled once."""
        return self.prepare(self.model._base_manager.using(using).filter(pk__in=keys).order_by())

    @cached_property
    def _compiled_reader(self) -> _RowReader | None:
        """:attr:`row_reader` when :meth:`read` may run statements compiled once: what it
        reads is then only :meth:`_by_keys`'s statement, the same text for every batch."""
        reader = self.row_reader
        if reader is None:
            return None
        cls, manager = type(self), self.model._base_manager
        if cls.prepare is not Collection.prepare or cls.documents is not Collection.documents:
            why = "prepare() or documents() is overridden"
        elif type(manager) is not models.Manager:
            why = f"the base manager is a {type(manager).__qualname__}"
        else:
            return reader
        logger.debug("%s: reads by primary key are compiled each time (%s)", self.name, why)
        return None

    def documents(self, queryset: QuerySet) -> dict[str, dict[str, Any]]:
        """``{document id: fields}`` of ``queryset``'s rows (a queryset of
        this collection's model, :meth:`prepare`d), in its order: :meth:`serialize` of each row, exactly.

        Unless ``serialize`` is overridden (or the model or a field needs its instances:
        :attr:`row_reader`), the rows of the statement that would give model instances are
        read as they are, not as instances, and each many-to-many field with one more
        statement for all of them (the
        statement ``prefetch_related`` runs, through the related model's default manager, in
        its order), not a related manager per row: the same documents at a fraction of the
        cost (README.rst, "Performance: where the time goes").  Database errors and
        ``TypeError`` for a value with no DDP mapping propagate."""
        reader = self.row_reader
        if (reader is not None and queryset._iterable_class is ModelIterable
                and not queryset.query.combinator and not post_init.has_listeners(self.model)):
            docs = reader(queryset)
            if docs is not None:
                return docs
        return dict(self.serialize(obj) for obj in queryset)

    @cached_property
    def row_reader(self) -> Callable[[QuerySet], dict[str, dict[str, Any]]] | None:
        """What :meth:`documents` reads tuples with, or None when only model instances give
        :meth:`serialize`'s result: ``serialize`` overridden, a composite primary key, a
        model that overrides ``from_db`` or ``__init__``, a field whose value is not the
        column's (an overridden ``value_from_object``, a descriptor of its own; file fields
        are known), a many-to-many field whose join does not hold the primary key."""
        why = self._instances_needed()
        if why is not None:
            logger.debug("%s: documents are read as model instances (%s)", self.name, why)
            return None
        return _RowReader(self)

    def _instances_needed(self) -> str | None:
        model = self.model
        opts = model._meta
        if type(self).serialize is not Collection.serialize:
            return "serialize() is overridden"
        if not opts.pk.column:
            return "a composite primary key"
        if model.from_db.__func__ is not Model.from_db.__func__ or model.__init__ is not Model.__init__:
            return "the model overrides from_db() or __init__()"
        for field in (*self.plain, *self.foreign):
            if type(field).value_from_object is not models.Field.value_from_object:
                return f"{field.name} overrides value_from_object()"
            descriptor = getattr(model, field.attname, None)
            if field in self.foreign:
                known = type(descriptor) in (DeferredAttribute, ForeignKeyDeferredAttribute)
            elif isinstance(field, models.FileField):
                known = (isinstance(descriptor, FileDescriptor)
                         and field.attr_class in (FieldFile, ImageFieldFile))
            else:
                known = type(descriptor) is DeferredAttribute
            if not known:
                return f"{field.name} has a descriptor of its own ({type(descriptor).__name__})"
        for field in self.many:
            through = field.remote_field.through._meta
            source = through.get_field(field.m2m_field_name())
            if len(source.local_related_fields) != 1 or source.target_field != opts.pk:
                return f"{field.name}'s join table does not hold the primary key"
        return None

    READ_CHUNK: ClassVar[int] = 10_000

    @staticmethod
    def doc_id(pk: Any) -> str:
        """The DDP document id of a primary key: ``str(pk)``; for a composite key (a tuple)
        the JSON array of its parts' text, as PostgreSQL's ``jsonb`` prints it."""
        if isinstance(pk, tuple):
            return json.dumps([str(part) for part in pk], ensure_ascii=False)
        return str(pk)

    def pk_from_id(self, doc_id: str) -> Any:
        """The primary key for a DDP document id (``ValueError`` if it cannot be one)."""
        opts = self.model._meta
        if not opts.pk.column:  # CompositePrimaryKey: a JSON array with one text per part
            try:
                parts = json.loads(doc_id)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{doc_id!r} is not a {opts.label} id (a JSON array)") from exc
            fields = opts.pk_fields
            if not isinstance(parts, list) or len(parts) != len(fields) or \
                    not all(isinstance(p, str) for p in parts):
                raise ValueError(f"{doc_id!r} is not a {opts.label} id "
                                 f"(a JSON array of {len(fields)} strings)")
            return tuple(_to_python(f, p) for f, p in zip(fields, parts, strict=True))
        return _to_python(opts.pk, doc_id)

    def serialize(self, obj: Model) -> tuple[str, dict[str, Any]]:
        """``(document id, fields)`` for a row, values EJSON-ready.

        Raises ``TypeError`` naming the field (``"app.Model.field[2]: ... is not a DDP
        value"``) for a value with no DDP mapping.
        """
        fields: dict[str, Any] = {}
        for field in self.plain:
            fields[field.name] = to_ddp_value(field.value_from_object(obj), self._labels[field.name])
        for field in self.foreign:
            value = getattr(obj, field.attname)
            fields[field.attname] = None if value is None else str(value)
        for field in self.many:
            fields[f"{field.name}_ids"] = [str(o.pk) for o in getattr(obj, field.name).all()]
        return self.doc_id(obj.pk), fields


class _RowReader:
    """A collection's documents from tuples: what :meth:`Collection.serialize` makes of
    each model instance, without the instances (:meth:`Collection.documents`)."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection
        self.attnames = [collection.model._meta.pk.attname]  # the columns it reads, the key first
        # (field name, attname, label, file field?), in serialize()'s order
        self.plain: list[tuple[str, str, str, bool]] = []
        self.foreign: list[tuple[str, str]] = []
        for field in collection.plain:
            self.plain.append((field.name, field.attname, collection._labels[field.name],
                               isinstance(field, models.FileField)))
            self.attnames.append(field.attname)
        for field in collection.foreign:
            self.foreign.append((field.attname, field.attname))
            self.attnames.append(field.attname)
        # many-to-many: (document field, related model, lookup to this model, join table's
        # key of this model, this model's field it holds), as Django's forward manager has them
        self.many = []
        self._readers: dict[tuple[int, ...], Callable[..., dict[str, dict[str, Any]]]] = {}
        # by_keys(): (alias, the key array's SQL) -> (statement, layout, reader), or None
        # when the statement cannot be reused
        self._key_statements: dict[tuple[str, str], _Compiled | None] = {}
        # _many_ids(): (field's place, alias, the key array's SQL) ->
        # (the related model's ordering it was compiled with, statement or None)
        self._many_statements: dict[tuple[int, str, str],
                                    tuple[tuple[Any, ...], CompiledStatement | None]] = {}
        for field in collection.many:
            source = field.remote_field.through._meta.get_field(field.m2m_field_name())
            self.many.append((f"{field.name}_ids", field.remote_field.model, field.related_query_name(),
                              source, source.foreign_related_fields[0]))

    def __call__(self, queryset: QuerySet) -> dict[str, dict[str, Any]] | None:
        """The documents of ``queryset``'s rows; None (nothing run) if its select list lacks
        a column of theirs (``only()``/``defer()``: instances load those one by one).

        The statement is the one the instances would come from (Django's ``ModelIterable``:
        same select list, annotations and joins included, so the same rows and errors); its
        rows are read as Django converts them, without instances."""
        compiler = queryset.query.get_compiler(using=queryset.db)
        compiler.setup_query()
        layout = self._layout(compiler)
        if layout is None:
            return None
        rows = compiler.results_iter(compiler.execute_sql())
        return self._documents(rows, layout, self._reader(layout), queryset.db)

    def by_keys(self, keys: RawSQL, using: str) -> dict[str, dict[str, Any]] | None:
        """What ``self(collection._by_keys(keys, using))`` gives (``keys``: :func:`keys_in`'s
        one-array form), the statement compiled on the first call per alias and key type
        and only run afterwards; None (nothing run) when it cannot be reused."""
        cache_key = (using, keys.sql)
        try:
            compiled = self._key_statements[cache_key]
        except KeyError:
            compiled = self._key_statements[cache_key] = self._compile_by_keys(keys, using)
        if compiled is None:
            return None
        statement, layout, read = compiled
        return self._documents(statement.rows(keys.params[0], using), layout, read, using)

    def _compile_by_keys(self, keys: RawSQL, using: str) -> _Compiled | None:
        statement = _compiled(lambda rhs: self.collection._by_keys(rhs, using), keys)
        layout = None if statement is None else self._layout(statement)
        if statement is None or layout is None:
            logger.debug("%s: its reads by primary key are compiled each time", self.collection.name)
            return None
        return statement, layout, self._reader(layout)

    def _layout(self, compiler: Any) -> tuple[int, ...] | None:
        """Where the compiled statement's rows hold the key and the columns of
        :attr:`attnames`; None if its select list lacks one of them."""
        select, klass_info = compiler.select, compiler.klass_info
        if klass_info is None:
            return None
        first, last = klass_info["select_fields"][0], klass_info["select_fields"][-1]
        at = {column[0].target.attname: first + i for i, column in enumerate(select[first:last + 1])}
        if any(attname not in at for attname in self.attnames):
            return None
        return (at[self.attnames[0]], *(at[attname] for attname in self.attnames[1:]))

    def _reader(self, layout: tuple[int, ...]) -> Callable[..., dict[str, dict[str, Any]]]:
        read = self._readers.get(layout)
        if read is None:
            read = self._readers[layout] = self._row_function(layout)
        return read

    def _documents(self, rows: Any, layout: tuple[int, ...], read: Callable[..., dict[str, dict[str, Any]]],
                   using: str) -> dict[str, dict[str, Any]]:
        if not self.many:
            return read(rows)
        # Each many-to-many field's ids first (they need every key), then each document
        # written whole, in one pass: not a second pass adding a field to every dict.
        rows = list(rows)
        key = layout[0]
        return read(rows, *self._many_ids([row[key] for row in rows], using))

    def _row_function(self, layout: tuple[int, ...]) -> Callable[..., dict[str, dict[str, Any]]]:
        """A function of the rows, for columns at ``layout`` (the key's, then those of
        :attr:`attnames`), and of each many-to-many field's ids per row
        (:meth:`_many_ids`), giving ``{document id: fields}``: one loop with a variable per
        column and the fields written as one dict display, compiled once per layout (as
        :mod:`dataclasses` writes ``__init__``): about half the time of a loop over the
        fields per row.  Each value is what :meth:`Collection.serialize` makes of it: as it
        is when it is a ``str``, ``int``, ``bool``, ``float`` or None (a file field's empty
        name: None), else ``to_ddp_value``'s; a foreign key's ``str``."""
        many = [f"m{n}" for n in range(len(self.many))]
        lines = [f"def read({', '.join(['rows', *many])}):",
                 "    docs = {}",
                 f"    for {', '.join(['row', *(f'i{n}' for n in range(len(many)))])} in "
                 + (f"zip(rows, {', '.join(many)}, strict=True):" if many else "rows:"),
                 f"        key = row[{layout[0]}]"]
        names: dict[str, Any] = {"PLAIN": _PLAIN, "convert": to_ddp_value, "doc_id": self.collection.doc_id}
        entries = []
        plain_at, foreign_at = layout[1:1 + len(self.plain)], layout[1 + len(self.plain):]
        for n, ((name, _, label, is_file), i) in enumerate(zip(self.plain, plain_at, strict=True)):
            names[f"label{n}"] = label
            lines.append(f"        v{n} = row[{i}]")
            if is_file:  # a FieldFile: its name, or None when empty
                lines.append(f"        v{n} = (v{n} or None) if type(v{n}) in PLAIN "
                             f"else convert(v{n}, label{n})")
            else:
                lines.append(f"        if type(v{n}) not in PLAIN: v{n} = convert(v{n}, label{n})")
            entries.append(f"{name!r}: v{n}")
        for n, ((name, _), i) in enumerate(zip(self.foreign, foreign_at, strict=True)):
            lines.append(f"        f{n} = row[{i}]")
            entries.append(f"{name!r}: None if f{n} is None else str(f{n})")
        entries += [f"{name!r}: i{n}" for n, (name, *_) in enumerate(self.many)]
        same_ids = type(self.collection).doc_id is Collection.doc_id  # str(pk): never a tuple here
        lines += [f"        docs[{'str(key)' if same_ids else 'doc_id(key)'}] = {{{', '.join(entries)}}}",
                  "    return docs"]
        exec("\n".join(lines), names)  # the names are the model's fields, written as repr() literals
        return names["read"]

    def _many_ids(self, keys: list[Any], using: str) -> list[list[list[str]]]:
        """Per many-to-many field, each row's ``<name>_ids`` (``keys``: the rows' primary
        keys, in order): one statement per field for all the rows, the one
        ``prefetch_related`` runs (Django's
        forward many-to-many manager, ``get_prefetch_querysets``): the related model's
        default manager, filtered on the join, in its order, with the join table's key of
        this model selected; matched on both sides' ``get_db_prep_value`` as there.  When
        the related model has no order of its own (the prefetch's order is then whatever the
        plan gives), the ids come in the join table's key order, the order they were added.

        A statement whose keys go as one array parameter (:func:`keys_in`) is compiled once
        per field, alias, key type and related model's ordering, unless the related model's
        default manager has a ``get_queryset`` (or queryset class) of its own."""
        if not keys:
            return [[] for _ in self.many]
        connection = connections[using]
        prepared: dict[models.Field, list[Any]] = {}
        out = []
        for n, (_name, related, _lookup, source, key_field) in enumerate(self.many):
            if key_field not in prepared:
                prepared[key_field] = prepared_keys(key_field, keys, connection)
            matched = prepared[key_field]
            rhs = keys_in(keys, matched, key_field, connection)
            statement = None
            if isinstance(rhs, RawSQL) and _plain_default_manager(related):
                statement = self._many_statement(n, rhs, using)
            if statement is not None:
                pairs = statement.rows(rhs.params[0], using)
            else:
                pairs = list(self._many_queryset(n, rhs, using))
            # the join table's key prepared as its field does (a foreign key: as its target)
            source_keys = prepared_keys(key_field if type(source).get_db_prep_value is _FK_PREP else source,
                                        [source_key for source_key, _ in pairs], connection)
            found: dict[Any, list[str]] = {}
            for source_key, (_, related_pk) in zip(source_keys, pairs, strict=True):
                found.setdefault(source_key, []).append(str(related_pk))
            out.append([found.get(key, []) for key in matched])
        return out

    def _many_queryset(self, n: int, keys: list[Any] | RawSQL, using: str) -> QuerySet:
        """The ``n``-th many-to-many field's statement for ``keys`` (:func:`keys_in`'s): pairs
        of (join table's key of this model, related primary key)."""
        _name, related, lookup, source, _key_field = self.many[n]
        quote = connections[using].ops.quote_name
        column = f"_ddpctl_source_{source.attname}"
        queryset = related._default_manager.db_manager(using).get_queryset()
        queryset = queryset.filter(**{f"{lookup}__in": keys})
        table = quote(source.model._meta.db_table)
        selected = {column: f"{table}.{quote(source.column)}"}
        if not queryset.ordered:  # unspecified: take the order they were added in, every time
            selected["_ddpctl_join_key"] = f"{table}.{quote(source.model._meta.pk.column)}"
            queryset = queryset.extra(select=selected, order_by=["_ddpctl_join_key"])
        else:
            queryset = queryset.extra(select=selected)
        return queryset.values_list(column, "pk")

    def _many_statement(self, n: int, keys: RawSQL, using: str) -> CompiledStatement | None:
        """:meth:`_many_queryset`'s statement compiled once (again when the related model's
        ``Meta.ordering`` is changed); None when it cannot be reused."""
        ordering = tuple(self.many[n][1]._meta.ordering)
        cache_key = (n, using, keys.sql)
        compiled = self._many_statements.get(cache_key)
        if compiled is None or compiled[0] != ordering:
            statement = _compiled(lambda rhs: self._many_queryset(n, rhs, using), keys)
            compiled = self._many_statements[cache_key] = (ordering, statement)
        return compiled[1]


def _compiled(build: Callable[[RawSQL], QuerySet], keys: RawSQL) -> CompiledStatement | None:
    """The statement of ``build(keys)`` compiled once (``keys``: :func:`keys_in`'s array
    form), its array parameter the one to replace on each run; None when it cannot be.
    The alias and the array's SQL (its column type) settle the text: the cache keys."""
    sentinel = object()
    with_sentinel = RawSQL(keys.sql, (sentinel,), output_field=keys.output_field)
    return CompiledStatement.of(build(with_sentinel), sentinel)


def _plain_default_manager(model: type[Model]) -> bool:
    """Whether ``model``'s default manager gives Django's own queryset, unfiltered (its
    statements then depend on the model's options only)."""
    manager = model._default_manager
    kind = type(manager)
    return (kind.get_queryset is BaseManager.get_queryset and kind.db_manager is BaseManager.db_manager
            and manager._queryset_class is QuerySet)


def keys_in(keys: list[Any], prepared: list[Any], field: models.Field, connection: Any) -> list[Any] | RawSQL:
    """The right-hand side of ``<field>__in`` for ``keys`` (values of ``field``; ``prepared``:
    their ``get_db_prep_value``): one array parameter cast to the field's column type
    (``IN (SELECT unnest(%s::integer[]))``) when the database values are all ``int``, all
    ``str`` or all ``UUID``, else ``keys`` as they are.  For 10,000 keys, Django's own
    ``__in`` list spends about 0.3 s preparing and compiling a placeholder per key.  The
    array goes as the text of an array literal (``'{1,2,3}'``, :func:`array_literal`): one
    string parameter, which PostgreSQL reads about 3x faster than an ``ARRAY[...]`` of
    10,000 constants and psycopg2 quotes in one pass (a list parameter takes it 20-30 ms
    per 10,000 integers, adapting each)."""
    kind = type(prepared[0]) if prepared else None
    column_type = field.db_type(connection)
    if (kind not in (int, str, uuid.UUID) or not column_type
            or any(type(value) is not kind for value in prepared)):
        return keys
    return RawSQL(f"SELECT unnest(%s::{column_type}[])", (array_literal(prepared),), output_field=field)


def array_literal(values: list[int] | list[str] | list[uuid.UUID]) -> str:
    """PostgreSQL's text of a one-dimensional array of ``values`` (all ``int``, all ``str``
    or all ``UUID``): ``[1, 2]`` -> ``'{1,2}'``, ``['a', 'b"c']`` -> ``'{"a","b\\"c"}'`` (each
    string double-quoted, ``"`` and ``\\`` escaped with a backslash, so ``NULL``, commas,
    braces and spaces stay text)."""
    if values and type(values[0]) is str:
        return "{" + ",".join(['"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values]) + "}"
    return "{" + ",".join(map(str, values)) + "}"


_FK_PREP = models.ForeignKey.get_db_prep_value  # the target field's get_db_prep_value
_STOCK_INTEGER_PREP = {models.IntegerField.get_db_prep_value, models.AutoField.get_db_prep_value}


def prepared_keys(field: models.Field, keys: list[Any], connection: Any) -> list[Any]:
    """``[field.get_db_prep_value(key, connection) for key in keys]``, without the calls
    when they would return each key as it is: keys all exactly ``int`` for one of Django's
    own integer fields (``AutoField``, ``IntegerField`` and their kinds, neither
    ``get_prep_value`` nor ``get_db_prep_value`` overridden, the backend's integer
    adaptation the default), whose ``int(key)`` is the key: about 1.5 µs per key saved."""
    kind, ops = type(field), type(connection.ops)
    if (isinstance(field, (models.IntegerField, models.AutoField))
            and kind.get_db_prep_value in _STOCK_INTEGER_PREP
            and kind.get_prep_value is models.IntegerField.get_prep_value
            and ops.validate_autopk_value is BaseDatabaseOperations.validate_autopk_value
            and ops.adapt_integerfield_value is BaseDatabaseOperations.adapt_integerfield_value
            and all(type(key) is int for key in keys)):
        return list(keys)
    prep = field.get_db_prep_value
    return [prep(key, connection) for key in keys]


def _to_python(field: models.Field, text: str) -> Any:
    try:
        return field.to_python(text)
    except ValidationError as exc:
        raise ValueError(f"{text!r} is not a valid {field.name}: {'; '.join(exc.messages)}") from exc


class CollectionRegistry:
    def __init__(self) -> None:
        self._by_model: dict[type[Model], Collection] = {}
        self._by_name: dict[str, Collection] = {}

    def register(self, cls: type[Collection]) -> None:
        existing = self._by_model.get(cls.model)
        if existing is not None and type(existing).__qualname__ != cls.__qualname__:
            raise ValueError(f"{cls.model.__name__} already has a collection: {type(existing).__name__}")
        instance = cls()
        self._by_model[cls.model] = instance
        self._by_name[cls.name] = instance

    def unregister(self, cls: type[Collection]) -> None:
        self._by_model.pop(cls.model, None)
        self._by_name.pop(cls.name, None)

    def for_model(self, model: type[Model]) -> Collection:
        try:
            return self._by_model[model]
        except KeyError:
            raise LookupError(
                f"{model._meta.label} is published but has no Collection; define one in ddp.py "
                "so its table gets change-capture triggers") from None

    def by_name(self, name: str) -> Collection | None:
        return self._by_name.get(name)

    def all(self) -> list[Collection]:
        return list(self._by_model.values())

    def by_table(self) -> dict[str, Collection]:
        return {c.table: c for c in self._by_model.values()}


collections = CollectionRegistry()
