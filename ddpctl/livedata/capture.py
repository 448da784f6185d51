"""Change capture: triggers that write every committed row change to ``ddpctl_change``.

Statement-level ``AFTER`` triggers with transition tables, so a bulk statement costs one
``INSERT ... SELECT`` however many rows it touches, and a ``NOTIFY ddpctl`` wakes the
serving nodes (PostgreSQL sends it only at commit; a rolled-back transaction leaves no
row and no wake-up).  The triggers never look at subscribers: a write costs the same with
none or ten thousand.  A many-to-many change is recorded as an update of the owning row's
``<field>_ids``.  ``ddpctl migrate`` installs them; ``ddpctl migrate --check`` verifies.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.db import connections
from django.db.models import Model

__all__ = ["CHANNEL", "Target", "targets", "install", "missing", "FUNCTIONS_SQL"]

CHANNEL = "ddpctl"
TRIGGER_PREFIX = "ddpctl_capture_"

FUNCTIONS_SQL = r"""
-- INSERT and DELETE: one row per inserted (new_rows) or deleted (old_rows) row.
CREATE OR REPLACE FUNCTION ddpctl_capture_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('INSERT INTO ddpctl_change ("table", op, "row") SELECT %L, %L, r.%I::text FROM %I r',
                 TG_TABLE_NAME, left(TG_OP, 1), TG_ARGV[0],
                 CASE TG_OP WHEN 'INSERT' THEN 'new_rows' ELSE 'old_rows' END);
  PERFORM pg_notify('ddpctl', '');
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION ddpctl_capture_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- One row per changed row, naming the changed columns; updates that change nothing are skipped.
  EXECUTE format(
    'INSERT INTO ddpctl_change ("table", op, "row", fields) '
    'SELECT %L, ''U'', n.%I::text, ARRAY(SELECT e.key FROM jsonb_each(to_jsonb(n)) e '
    '                                   WHERE e.value IS DISTINCT FROM to_jsonb(o) -> e.key) '
    'FROM new_rows n JOIN old_rows o ON o.%I = n.%I WHERE to_jsonb(n) IS DISTINCT FROM to_jsonb(o) '
    'UNION ALL SELECT %L, ''D'', o.%I::text, NULL FROM old_rows o WHERE o.%I NOT IN (SELECT %I FROM new_rows) '
    'UNION ALL SELECT %L, ''I'', n.%I::text, NULL FROM new_rows n WHERE n.%I NOT IN (SELECT %I FROM old_rows)',
    TG_TABLE_NAME, TG_ARGV[0], TG_ARGV[0], TG_ARGV[0],
    TG_TABLE_NAME, TG_ARGV[0], TG_ARGV[0], TG_ARGV[0],
    TG_TABLE_NAME, TG_ARGV[0], TG_ARGV[0], TG_ARGV[0]);
  PERFORM pg_notify('ddpctl', '');
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION ddpctl_capture_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO ddpctl_change ("table", op) VALUES (COALESCE(TG_ARGV[0], TG_TABLE_NAME), 'T');
  PERFORM pg_notify('ddpctl', '');
  RETURN NULL;
END $$;

-- Many-to-many: ARGV = owner table, owner column in the through table, field name.
CREATE OR REPLACE FUNCTION ddpctl_capture_m2m() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    EXECUTE format('INSERT INTO ddpctl_change ("table", op, "row", fields) '
                   'SELECT DISTINCT %L, ''U'', n.%I::text, ARRAY[%L] FROM new_rows n',
                   TG_ARGV[0], TG_ARGV[1], TG_ARGV[2]);
  END IF;
  IF TG_OP IN ('DELETE', 'UPDATE') THEN
    EXECUTE format('INSERT INTO ddpctl_change ("table", op, "row", fields) '
                   'SELECT DISTINCT %L, ''U'', o.%I::text, ARRAY[%L] FROM old_rows o',
                   TG_ARGV[0], TG_ARGV[1], TG_ARGV[2]);
  END IF;
  PERFORM pg_notify('ddpctl', '');
  RETURN NULL;
END $$;
"""


@dataclass(frozen=True)
class Target:
    """A table to capture: a published model's table, or a many-to-many through table."""

    table: str
    pk_column: str
    owner_table: str | None = None  # set for through tables
    owner_column: str | None = None
    field: str | None = None

    def trigger_sql(self) -> list[str]:
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
        pk = _literal(self.pk_column)
        return [
            f"CREATE TRIGGER {TRIGGER_PREFIX}i AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows "
            f"FOR EACH STATEMENT EXECUTE FUNCTION ddpctl_capture_rows({pk})",
            f"CREATE TRIGGER {TRIGGER_PREFIX}u AFTER UPDATE ON {table} "
            f"REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
            f"FOR EACH STATEMENT EXECUTE FUNCTION ddpctl_capture_update({pk})",
            f"CREATE TRIGGER {TRIGGER_PREFIX}d AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows "
            f"FOR EACH STATEMENT EXECUTE FUNCTION ddpctl_capture_rows({pk})",
            f"CREATE TRIGGER {TRIGGER_PREFIX}t AFTER TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION ddpctl_capture_truncate()",
        ]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str | None) -> str:
    return "'" + (value or "").replace("'", "''") + "'"


def targets_for_model(model: type[Model]) -> list[Target]:
    opts = model._meta
    out = [Target(opts.db_table, opts.pk.column)]
    for field in opts.local_many_to_many:
        through = field.remote_field.through._meta
        out.append(Target(through.db_table, through.pk.column, owner_table=opts.db_table,
                          owner_column=field.m2m_column_name(), field=f"{field.name}_ids"))
    return out


def targets() -> list[Target]:
    """Every table ddpctl must capture: the models of registered collections, their
    many-to-many tables, and ``settings.DDPCTL_CAPTURE_MODELS`` ("app_label.Model")."""
    from django.apps import apps
    from django.conf import settings

    from .collection import collections

    models: list[type[Model]] = [c.model for c in collections.all()]
    for label in getattr(settings, "DDPCTL_CAPTURE_MODELS", []):
        models.append(apps.get_model(label))
    seen: dict[str, Target] = {}
    for model in models:
        for target in targets_for_model(model):
            seen.setdefault(target.table, target)
    return sorted(seen.values(), key=lambda t: t.table)


def _installed(cursor) -> dict[str, set[str]]:
    cursor.execute(
        "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE NOT t.tgisinternal AND t.tgname LIKE %s AND c.relnamespace = ANY(current_schemas(false)::regnamespace[])",
        [TRIGGER_PREFIX + "%"])
    found: dict[str, set[str]] = {}
    for table, name in cursor.fetchall():
        found.setdefault(table, set()).add(name)
    return found


def install(using: str = "default") -> tuple[list[str], list[str]]:
    """Create or replace every capture trigger; drop ours from tables no longer published.

    Returns ``(installed tables, tables whose triggers were removed)``.
    """
    wanted = targets()
    with connections[using].cursor() as cursor:
        cursor.execute(FUNCTIONS_SQL)
        stale = sorted(set(_installed(cursor)) - {t.table for t in wanted})
        for table in stale:
            _drop(cursor, table)
        for target in wanted:
            _drop(cursor, target.table)
            for stmt in target.trigger_sql():
                cursor.execute(stmt)
    return [t.table for t in wanted], stale


def _drop(cursor, table: str) -> None:
    for op in "iudt":
        cursor.execute(f"DROP TRIGGER IF EXISTS {TRIGGER_PREFIX}{op} ON {_quote(table)}")


def missing(using: str = "default") -> list[str]:
    """Published tables that lack any of their capture triggers."""
    expected = {f"{TRIGGER_PREFIX}{op}" for op in "iudt"}
    with connections[using].cursor() as cursor:
        found = _installed(cursor)
    return [t.table for t in targets() if not expected <= found.get(t.table, set())]
