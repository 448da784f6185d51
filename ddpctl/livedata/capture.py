"""Change capture: triggers that write every committed row change to ``ddpctl_change``.

Statement-level ``AFTER`` triggers with transition tables, so a bulk statement costs one
``INSERT ... SELECT`` however many rows it touches, and a ``NOTIFY ddpctl`` wakes the
serving nodes (PostgreSQL sends it only at commit; a rolled-back transaction leaves no
row and no wake-up).  The triggers never look at subscribers: a write costs the same with
none or ten thousand.  A many-to-many change is recorded as an update of the owning row's
``<field>_ids``.  ``ddpctl migrate`` installs them; ``ddpctl migrate --check`` verifies.

Captured tables (:func:`targets`): the models of registered Collections and their
many-to-many tables, ``settings.DDPCTL_CAPTURE_MODELS``, models apps name with
:func:`capture_models` and every table that the
statically known querysets read (:func:`ddpctl.livedata.reads.traced_tables`).  A table
that only a run-time queryset reads (a publication with params) is captured by the
serving node itself before the observer's first query (:func:`ensure_captured`).

The trigger functions work on any table: every identifier is quoted (``%I``), the
transition tables are read only through qualified references (``r.col``, ``r.*``) inside
CTEs whose own columns are ``k`` (the key text) and ``j`` (the row as ``jsonb``), so no
column name (``o``, ``n``, ``key``, ``value``, ``row`` ...) can shadow what they use.
The ``row`` recorded is the primary key as text; for a composite primary key it is the
JSON array of its columns' text, ``["1", "a"]`` (what :meth:`Collection.doc_id` gives).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.db import connections, transaction
from django.db.models import Model

__all__ = ["CHANNEL", "CaptureError", "MissingTables", "Target", "capture_models_setting", "targets",
           "target_for_table", "install", "missing", "missing_tables", "ensure_captured", "functions_sql",
           "capture_models"]

logger = logging.getLogger(__name__)

CHANNEL = "ddpctl"
TRIGGER_PREFIX = "ddpctl_capture_"
TRIGGER_NAMES = frozenset(f"{TRIGGER_PREFIX}{op}" for op in "iudt")
# The TRUNCATE trigger of a table a serving node captured itself carries this second argument
# (a mark that needs no ownership of the table, unlike COMMENT ON TRIGGER).
RUN_TIME_MARK = "installed at run time by ddpctl serve"
# pg_advisory_xact_lock key serializing trigger installs between nodes (crc32 of "ddpctl_capture")
_LOCK_KEY = 0x6464_7063

# The writer's session settings must not change a key's text (a timestamp key written from a
# session in another TimeZone or DateStyle, a float key with extra_float_digits=0 would not
# match the row's id): the trigger functions run with these, whatever the writer set.
_OUTPUT_SETTINGS = ("SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres' "
                    "SET extra_float_digits = 1 SET bytea_output = 'hex'")

_FUNCTIONS_SQL = r"""
-- The key expression of alias `alias` for key columns `cols` (text, JSON array text if several).
CREATE OR REPLACE FUNCTION {schema}.ddpctl_capture_key(alias text, cols text[]) RETURNS text
LANGUAGE sql IMMUTABLE AS $ddpctl$
  SELECT CASE coalesce(cardinality(cols), 0)
    WHEN 0 THEN 'NULL::text'
    WHEN 1 THEN format('%I.%I::text', alias, cols[array_lower(cols, 1)])
    ELSE 'jsonb_build_array(' || (SELECT string_agg(format('%I.%I::text', alias, c), ', ' ORDER BY i)
                                  FROM unnest(cols) WITH ORDINALITY AS u(c, i)) || ')::text'
  END
$ddpctl$;

-- INSERT and DELETE: one row per inserted (new_rows) or deleted (old_rows) row.
-- ARGV: the primary key column(s).
CREATE OR REPLACE FUNCTION {schema}.ddpctl_capture_rows() RETURNS trigger LANGUAGE plpgsql {output_settings} AS $ddpctl$
BEGIN
  EXECUTE format('INSERT INTO %s ("table", op, "row") SELECT $1, $2, %s FROM %I AS r',
                 {changelog},
                 CASE TG_NARGS WHEN 1 THEN format('r.%I::text', TG_ARGV[0]) ELSE {schema}.ddpctl_capture_key('r', TG_ARGV) END,
                 CASE TG_OP WHEN 'INSERT' THEN 'new_rows' ELSE 'old_rows' END)
    USING TG_TABLE_NAME::text, left(TG_OP, 1);
  PERFORM pg_notify('ddpctl', '');
  RETURN NULL;
END $ddpctl$;

-- UPDATE: one row per changed row, naming the changed columns; rows that change nothing are
-- skipped; a row whose key changed is a delete of the old key and an insert of the new one.
CREATE OR REPLACE FUNCTION {schema}.ddpctl_capture_update() RETURNS trigger LANGUAGE plpgsql {output_settings} AS $ddpctl$
DECLARE
  k text := CASE TG_NARGS WHEN 1 THEN format('r.%I::text', TG_ARGV[0]) ELSE {schema}.ddpctl_capture_key('r', TG_ARGV) END;
BEGIN
  EXECUTE format(
    'WITH o AS (SELECT %1$s AS k, to_jsonb(r.*) AS j FROM old_rows AS r), '
    '     n AS (SELECT %1$s AS k, to_jsonb(r.*) AS j FROM new_rows AS r) '
    'INSERT INTO %2$s ("table", op, "row", fields) '
    'SELECT $1, CASE WHEN o.j IS NULL THEN ''I'' WHEN n.j IS NULL THEN ''D'' ELSE ''U'' END, '
    '       coalesce(n.k, o.k), '
    '       CASE WHEN o.j IS NOT NULL AND n.j IS NOT NULL THEN ARRAY('
    '         SELECT e.key FROM jsonb_each(n.j) AS e WHERE e.value IS DISTINCT FROM o.j -> e.key) END '
    'FROM o FULL JOIN n ON o.k = n.k WHERE o.j IS DISTINCT FROM n.j',
    k, {changelog})
    USING TG_TABLE_NAME::text;
  PERFORM pg_notify('ddpctl', '');
  RETURN NULL;
END $ddpctl$;

-- ARGV: the table to record (a many-to-many table records its owner's), if not this one;
-- then, for tables a serving node captured itself, a mark (unused here).
CREATE OR REPLACE FUNCTION {schema}.ddpctl_capture_truncate() RETURNS trigger LANGUAGE plpgsql {output_settings} AS $ddpctl$
BEGIN
  EXECUTE format('INSERT INTO %s ("table", op) VALUES ($1, ''T'')', {changelog})
    USING COALESCE(TG_ARGV[0], TG_TABLE_NAME::text);
  PERFORM pg_notify('ddpctl', '');
  RETURN NULL;
END $ddpctl$;

-- Many-to-many: ARGV = owner table, owner column in the through table, field name.
CREATE OR REPLACE FUNCTION {schema}.ddpctl_capture_m2m() RETURNS trigger LANGUAGE plpgsql {output_settings} AS $ddpctl$
BEGIN
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    EXECUTE format('INSERT INTO %s ("table", op, "row", fields) '
                   'SELECT DISTINCT $1, ''U'', r.%I::text, ARRAY[$2] FROM new_rows AS r',
                   {changelog}, TG_ARGV[1])
      USING TG_ARGV[0], TG_ARGV[2];
  END IF;
  IF TG_OP IN ('DELETE', 'UPDATE') THEN
    EXECUTE format('INSERT INTO %s ("table", op, "row", fields) '
                   'SELECT DISTINCT $1, ''U'', r.%I::text, ARRAY[$2] FROM old_rows AS r',
                   {changelog}, TG_ARGV[1])
      USING TG_ARGV[0], TG_ARGV[2];
  END IF;
  PERFORM pg_notify('ddpctl', '');
  RETURN NULL;
END $ddpctl$;
"""


class CaptureError(RuntimeError):
    """Change capture could not be installed on a table (its message names the table and the fix)."""


class MissingTables(CaptureError):
    """Tables of captured models do not exist (system check ``ddpctl.E007``): their app has
    no migration creating them, or it is not applied.  ``tables``: ``{table: model label}``;
    ``problems``: one message per table, naming the fix."""

    def __init__(self, tables: dict[str, str], app_labels: dict[str, str]) -> None:
        self.tables = tables
        self.problems = [
            f"table {table!r} of model {label} does not exist: run `python manage.py makemigrations "
            f"{app_labels[table]}`, then `ddpctl migrate`" for table, label in sorted(tables.items())]
        super().__init__("\n".join(self.problems))


def functions_sql(cursor) -> str:
    """The trigger functions' SQL, in the schema of ``ddpctl_change``, which they name
    schema-qualified (so a writer with another ``search_path`` still reaches them)."""
    cursor.execute("SELECT quote_ident(n.nspname), format('%I.%I', n.nspname, c.relname) FROM pg_class c "
                   "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = 'ddpctl_change'::regclass")
    schema, changelog = cursor.fetchone()
    return (_FUNCTIONS_SQL.replace("{changelog}", _literal(changelog)).replace("{schema}", schema)
            .replace("{output_settings}", _OUTPUT_SETTINGS))


@dataclass(frozen=True)
class Target:
    """A table to capture: a published model's table, or a many-to-many through table.

    ``pk_columns``: the primary key column(s) recorded as the row's id (empty: a table
    without a key, whose changes are recorded without one).
    """

    table: str
    pk_columns: tuple[str, ...]
    owner_table: str | None = None  # set for through tables
    owner_column: str | None = None
    field: str | None = None

    def trigger_sql(self, run_time: bool = False) -> list[str]:
        """``CREATE TRIGGER`` statements for ``ddpctl_capture_`` + ``i``, ``u``, ``d``, ``t``
        in that order; ``run_time`` marks them as installed by a serving node."""
        table = _quote(self.table)
        if self.owner_table:
            args = ", ".join(_literal(a) for a in (self.owner_table, self.owner_column, self.field))
            stmts = [f"CREATE TRIGGER {TRIGGER_PREFIX}{op} AFTER {verb} ON {table} "
                     f"REFERENCING {refs} FOR EACH STATEMENT EXECUTE FUNCTION ddpctl_capture_m2m({args})"
                     for op, verb, refs in (("i", "INSERT", "NEW TABLE AS new_rows"),
                                            ("u", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
                                            ("d", "DELETE", "OLD TABLE AS old_rows"))]
            stmts.append(f"CREATE TRIGGER {TRIGGER_PREFIX}t AFTER TRUNCATE ON {table} "
                         f"FOR EACH STATEMENT EXECUTE FUNCTION ddpctl_capture_truncate({_literal(self.owner_table)})")
            return stmts
        pk = ", ".join(_literal(c) for c in self.pk_columns)
        return [
            f"CREATE TRIGGER {TRIGGER_PREFIX}i AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows "
            f"FOR EACH STATEMENT EXECUTE FUNCTION ddpctl_capture_rows({pk})",
            f"CREATE TRIGGER {TRIGGER_PREFIX}u AFTER UPDATE ON {table} "
            f"REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
            f"FOR EACH STATEMENT EXECUTE FUNCTION ddpctl_capture_update({pk})",
            f"CREATE TRIGGER {TRIGGER_PREFIX}d AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows "
            f"FOR EACH STATEMENT EXECUTE FUNCTION ddpctl_capture_rows({pk})",
            f"CREATE TRIGGER {TRIGGER_PREFIX}t AFTER TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ddpctl_capture_truncate("
            + (f"{_literal(self.table)}, {_literal(RUN_TIME_MARK)}" if run_time else "") + ")",
        ]


_model_providers: list[Callable[[], Iterable[type[Model]]]] = []


def capture_models(provider: Callable[[], Iterable[type[Model]]]) -> None:
    """Have :func:`targets` capture the models ``provider()`` returns (called when targets are
    computed, so it may use the app registry): for apps that must hear about changes of
    tables no Collection publishes (``ddpctl.accounts``: its tokens and the user table)."""
    _model_providers.append(provider)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str | None) -> str:
    return "'" + (value or "").replace("'", "''") + "'"


def targets_for_model(model: type[Model]) -> list[Target]:
    opts = model._meta
    out = [Target(opts.db_table, tuple(f.column for f in opts.pk_fields))]
    for field in opts.local_many_to_many:
        through = field.remote_field.through._meta
        out.append(Target(through.db_table, tuple(f.column for f in through.pk_fields),
                          owner_table=opts.db_table, owner_column=field.m2m_column_name(),
                          field=f"{field.name}_ids"))
    return out


def target_for_table(table: str, cursor) -> Target:
    """The capture target of a table read by a queryset: its Django model's primary key,
    else (a table Django does not know) its PostgreSQL primary key, else no key."""
    from django.apps import apps

    for model in apps.get_models(include_auto_created=True):
        if model._meta.db_table == table and not model._meta.proxy:
            return targets_for_model(model)[0]
    cursor.execute(
        "SELECT a.attname FROM pg_index i JOIN unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indisprimary AND i.indrelid = to_regclass(%s) ORDER BY k.n", [_quote(table)])
    return Target(table, tuple(r[0] for r in cursor.fetchall()))


_uncapturable_warned: set[str] = set()


def _capturable(cursor, tables: Iterable[str]) -> list[str]:
    """The ``tables`` that triggers can capture (tables and partitioned tables on the
    ``search_path``); the others (materialized views, foreign tables, tables outside the
    ``search_path``) are logged once, since their changes cannot reach clients."""
    tables = sorted(tables)
    if not tables:
        return []
    cursor.execute("SELECT t, c.relkind::text FROM unnest(%s::text[]) AS t "
                   "LEFT JOIN pg_class c ON c.oid = to_regclass(quote_ident(t))", [tables])
    kinds = dict(cursor.fetchall())
    out = []
    for table in tables:
        if kinds.get(table) in ("r", "p"):
            out.append(table)
        elif table not in _uncapturable_warned:
            _uncapturable_warned.add(table)
            logger.warning("a publication reads %r, which change-capture triggers cannot watch (%s); "
                           "its changes reach clients only with changes of the tables they read",
                           table, "not on the search_path" if kinds.get(table) is None
                           else f"pg_class.relkind {kinds[table]!r}")
    return out


def capture_models_setting() -> list[type[Model]]:
    """The models ``settings.DDPCTL_CAPTURE_MODELS`` names (a list of ``"app_label.Model"``,
    default ``[]``).  ``ValueError`` if it is not such a list or names no installed model
    (system check ``ddpctl.E006``)."""
    from django.apps import apps
    from django.conf import settings

    labels = getattr(settings, "DDPCTL_CAPTURE_MODELS", [])
    if not isinstance(labels, list | tuple) or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"DDPCTL_CAPTURE_MODELS must be a list of 'app_label.Model' strings, not {labels!r}.")
    models = []
    for label in labels:
        try:
            models.append(apps.get_model(label))
        except (LookupError, ValueError):
            raise ValueError(f"DDPCTL_CAPTURE_MODELS names {label!r}, which is not an installed model "
                             "('app_label.Model').") from None
    return models


def _captured_models() -> list[type[Model]]:
    from .collection import collections

    models: list[type[Model]] = [c.model for c in collections.all()]
    models.extend(capture_models_setting())
    for provider in _model_providers:
        models.extend(provider())
    return models


def missing_tables(using: str = "default") -> MissingTables | None:
    """The tables of the models :func:`targets` captures (and their many-to-many tables) that
    do not exist in the database, as a :class:`MissingTables` to raise or report; ``None``
    if every one exists.  Unmanaged models and views count: their table must exist too."""
    wanted: dict[str, str] = {}
    app_labels: dict[str, str] = {}
    for model in _captured_models():
        for target in targets_for_model(model):
            label = model._meta.label
            if target.owner_table is not None:
                label += f".{target.field.removesuffix('_ids')} (its many-to-many table)"
            wanted.setdefault(target.table, label)
            app_labels.setdefault(target.table, model._meta.app_label)
    connection = connections[using]
    with connection.cursor() as cursor:
        present = set(connection.introspection.table_names(cursor, include_views=True))
    lacking = {table: label for table, label in wanted.items() if table not in present}
    return MissingTables(lacking, app_labels) if lacking else None


def targets(using: str = "default") -> list[Target]:
    """Every table ddpctl captures ahead of serving: the models of registered collections,
    their many-to-many tables, ``settings.DDPCTL_CAPTURE_MODELS`` ("app_label.Model") and
    every table the statically known querysets read (class-level ``queries``, each
    Collection's ``visible()`` traced with a stand-in user and with ``None``)."""
    from .reads import traced_tables

    models = _captured_models()
    seen: dict[str, Target] = {}
    for model in models:
        for target in targets_for_model(model):
            seen.setdefault(target.table, target)
    traced = [t for t in traced_tables(using) if t not in seen]
    if traced:
        with connections[using].cursor() as cursor:
            for table in _capturable(cursor, traced):
                seen[table] = target_for_table(table, cursor)
    return sorted(seen.values(), key=lambda t: t.table)


def _installed(cursor, tables: Iterable[str] | None = None) -> dict[str, set[str]]:
    """``{table: our trigger names on it}`` (for ``tables`` only, if given)."""
    cursor.execute(
        "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE NOT t.tgisinternal AND t.tgname LIKE %s "
        "AND c.relnamespace = ANY(current_schemas(false)::regnamespace[]) "
        "AND (%s::text[] IS NULL OR c.relname = ANY(%s::text[]))",
        [TRIGGER_PREFIX + "%", None if tables is None else list(tables), None if tables is None else list(tables)])
    found: dict[str, set[str]] = {}
    for table, name in cursor.fetchall():
        found.setdefault(table, set()).add(name)
    return found


def _installed_at_run_time(cursor) -> set[str]:
    cursor.execute(
        "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE t.tgname = %s AND t.tgnargs = 2 AND position(convert_to(%s, 'UTF8') IN t.tgargs) > 0 "
        "AND c.relnamespace = ANY(current_schemas(false)::regnamespace[])",
        [f"{TRIGGER_PREFIX}t", RUN_TIME_MARK])
    return {r[0] for r in cursor.fetchall()}


def install(using: str = "default") -> tuple[list[str], list[str]]:
    """Create or replace every capture trigger; drop ours from tables no longer captured
    (except those a serving node captured at run time: a live publication may read them).

    Returns ``(installed tables, tables whose triggers were removed)``.  Raises
    :class:`MissingTables`, before changing anything, if a captured model's table does not exist.
    """
    lacking = missing_tables(using)
    if lacking is not None:
        raise lacking
    wanted = targets(using)
    with transaction.atomic(using), connections[using].cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        cursor.execute(functions_sql(cursor))
        keep = {t.table for t in wanted} | _installed_at_run_time(cursor)
        stale = sorted(set(_installed(cursor)) - keep)
        for table in stale:
            _drop(cursor, table)
        for target in wanted:
            _create(cursor, target)
    return [t.table for t in wanted], stale


def _create(cursor, target: Target) -> None:
    _drop(cursor, target.table)
    for stmt in target.trigger_sql():
        cursor.execute(stmt)


def _drop(cursor, table: str) -> None:
    for op in "iudt":
        cursor.execute(f"DROP TRIGGER IF EXISTS {TRIGGER_PREFIX}{op} ON {_quote(table)}")


def missing(using: str = "default") -> list[str]:
    """Tables :func:`targets` names that lack any of their capture triggers."""
    wanted = targets(using)
    with connections[using].cursor() as cursor:
        found = _installed(cursor, [t.table for t in wanted])
    return [t.table for t in wanted if not TRIGGER_NAMES <= found.get(t.table, set())]


_captured: set[str] = set()  # tables this process saw with all their triggers


def ensure_captured(tables: Iterable[str], using: str = "default") -> None:
    """Make sure every table in ``tables`` has its capture triggers, installing any missing
    ones (under an advisory lock shared with other nodes and ``migrate``).

    Called before an observer's first query: a table only a run-time queryset reads (a
    publication with params) would otherwise never report its changes.  Logs a warning the
    first time it installs a table's triggers.  Raises :class:`CaptureError` naming the
    table and the fix when it cannot (no privilege, ``ddpctl migrate`` never run).
    """
    unknown = set(tables) - _captured
    if not unknown:
        return
    with transaction.atomic(using), connections[using].cursor() as cursor:
        complete = {t for t, names in _installed(cursor, unknown).items() if TRIGGER_NAMES <= names}
        _captured.update(complete)  # seen committed: a rollback of ours cannot undo them
        lacking = sorted(unknown - complete)
        if not lacking:
            return
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        again = _installed(cursor, lacking)  # another node may have just installed them
        for table in _capturable(cursor, lacking):
            if TRIGGER_NAMES <= again.get(table, set()):
                continue
            target = target_for_table(table, cursor)
            present = again.get(table, set())
            try:  # only the missing ones: dropping a trigger needs ownership, creating one TRIGGER
                with transaction.atomic(using):
                    for op, stmt in zip("iudt", target.trigger_sql(run_time=True), strict=True):
                        if f"{TRIGGER_PREFIX}{op}" not in present:
                            cursor.execute(stmt)
            except Exception as exc:
                raise CaptureError(
                    f"cannot install change capture on table {table!r}, which a publication reads "
                    f"({type(exc).__name__}: {str(exc).strip()}); add its model to DDPCTL_CAPTURE_MODELS "
                    f"and run `ddpctl migrate`, or grant this role TRIGGER on it") from exc
            logger.warning("table %r had no change-capture triggers; installed them at run time. Add its "
                           "model to settings.DDPCTL_CAPTURE_MODELS so `ddpctl migrate` installs them "
                           "ahead of time", table)
    if not connections[using].in_atomic_block:  # committed (inside a method's transaction: not yet)
        _captured.update(lacking)
