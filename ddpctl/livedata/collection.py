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
from typing import Any, ClassVar

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Model, QuerySet

from ..values import to_ddp_value

__all__ = ["Collection", "CollectionRegistry", "collections", "to_ddp_value"]


class Collection:
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
        Database errors and :meth:`serialize`'s ``TypeError`` propagate."""
        docs: dict[str, dict[str, Any] | None] = dict.fromkeys(keys)
        values = list(keys.values())
        for start in range(0, len(values), self.READ_CHUNK):
            rows = self.model._base_manager.using(using).filter(pk__in=values[start:start + self.READ_CHUNK])
            docs.update(self.serialize(obj) for obj in self.prepare(rows))
        return docs

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
