"""System checks (``ddpctl.E0xx`` errors, ``ddpctl.W0xx`` warnings)."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register("ddpctl")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    """``ddpctl.E001``: the database is not PostgreSQL; ``ddpctl.E002``: a setting of a
    ``ddpctl serve`` option (``DDPCTL_DB_CONNECTIONS``, ``DDPCTL_LISTEN``, ...) has the wrong
    type or value; ``ddpctl.E003``: ``DDPCTL_CHANGELOG_RETENTION``; ``ddpctl.E006``:
    ``DDPCTL_CAPTURE_MODELS``; ``ddpctl.E008``: ``DDPCTL_SECRET_PARAM_KEYS``; ``ddpctl.E010``:
    the rate limit settings."""
    problems: list[Error | Warning] = []
    engine = settings.DATABASES.get("default", {}).get("ENGINE", "")
    if "postgresql" not in engine and "postgis" not in engine:
        problems.append(Error(
            f"ddpctl needs PostgreSQL, but DATABASES['default'] uses {engine or 'nothing'!r}.",
            hint="Set DATABASES['default'] to django.db.backends.postgresql "
                 "(ddpctl.database.database_settings() reads DATABASE_URL).",
            id="ddpctl.E001"))
    from .commands.option_settings import setting_problems
    from .commands.serve import serve

    # DDPCTL_ALLOWED_ORIGINS has its own check (E011).
    for message in setting_problems(serve, settings, skip={"DDPCTL_ALLOWED_ORIGINS"}):
        problems.append(Error(message, id="ddpctl.E002",
                              hint="A `ddpctl serve` option's setting: see docs/settings.rst."))
    from .livedata.capture import capture_models_setting

    try:
        capture_models_setting()
    except ValueError as exc:
        problems.append(Error(str(exc), id="ddpctl.E006"))
    from .livedata.changelog import configured_retention

    try:
        configured_retention()
    except ValueError as exc:
        problems.append(Error(str(exc), id="ddpctl.E003"))
    from .redaction import compile_patterns

    try:
        compile_patterns(getattr(settings, "DDPCTL_SECRET_PARAM_KEYS", None))
    except ValueError as exc:
        problems.append(Error(str(exc), id="ddpctl.E008"))
    from .ratelimit.config import read_settings

    try:
        read_settings()
    except ValueError as exc:
        problems.append(Error(str(exc), id="ddpctl.E010",
                              hint="See 'Rate limits' in the ddpctl README."))
    return problems


@register(Tags.database)
def check_capture(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Error | Warning]:
    """``ddpctl.E007``: the table of a model that a Collection, ``DDPCTL_CAPTURE_MODELS`` or an
    app captures does not exist though every migration is applied (no migration creates it);
    ``ddpctl.W001``: a table that
    Collections, ``DDPCTL_CAPTURE_MODELS`` or a traced queryset read lacks its change-capture
    triggers (``manage.py check --database default``)."""
    from .database import embedded_missing

    if not databases or "default" not in databases or "default" in embedded_missing(settings.DATABASES):
        return []  # no database to look at: ddpctl.E040 says why
    from django.db import DatabaseError

    from .livedata.capture import missing, missing_tables

    try:
        # Only once migrated: manage.py migrate runs this check before it creates the tables.
        absent = None if _unapplied_migrations() else missing_tables()
        if absent is not None:
            return [Error(problem, id="ddpctl.E007") for problem in absent.problems]
        lacking = missing()
    except DatabaseError as exc:
        return [Warning(f"could not check change capture: {exc}".strip(), id="ddpctl.W002",
                        hint="Run `ddpctl migrate`.")]
    if not lacking:
        return []
    return [Warning("tables without change-capture triggers (their changes reach no client): "
                    + ", ".join(lacking), id="ddpctl.W001",
                    hint="Run `ddpctl migrate` (a serving node installs them itself when it first "
                         "needs them, if its role may).")]


def _unapplied_migrations(using: str = "default") -> bool:
    from django.db import connections
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[using])
    return bool(executor.migration_plan(executor.loader.graph.leaf_nodes()))


@register("ddpctl")
def check_origins_and_session_login(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    """``ddpctl.E011``: invalid ``DDPCTL_ALLOWED_ORIGINS``; ``ddpctl.E012``: invalid
    ``DDPCTL_SESSION_LOGIN``; ``ddpctl.E013``: session login without the apps it needs;
    ``ddpctl.W011``: session login while any origin may connect."""
    from django.apps import apps

    from .origins import OriginPolicy
    from .session_login import session_login_setting

    problems: list[Error | Warning] = []
    policy = None
    try:
        policy = OriginPolicy.from_settings()
    except ValueError as exc:
        problems.append(Error(str(exc), id="ddpctl.E011"))
    try:
        session_login = session_login_setting()
    except ValueError as exc:
        problems.append(Error(str(exc), id="ddpctl.E012"))
        return problems
    if not session_login:
        return problems
    needed = ["django.contrib.auth"]
    if settings.SESSION_ENGINE in ("django.contrib.sessions.backends.db",
                                   "django.contrib.sessions.backends.cached_db"):
        needed.append("django.contrib.sessions")
    missing = [app for app in needed if not apps.is_installed(app)]
    if missing:
        problems.append(Error(
            f"DDPCTL_SESSION_LOGIN needs {' and '.join(missing)} in INSTALLED_APPS "
            f"(SESSION_ENGINE is {settings.SESSION_ENGINE!r}).", id="ddpctl.E013"))
    if policy is not None and policy.allows_any:
        problems.append(Warning(
            "DDPCTL_SESSION_LOGIN is on and every web origin may open a DDP connection: a page "
            "on any site could act as a logged-in visitor.",
            hint="List your sites' origins in DDPCTL_ALLOWED_ORIGINS (or `ddpctl serve "
                 "--allowed-origin`) instead of '*', or narrow ALLOWED_HOSTS.", id="ddpctl.W011"))
    return problems


@register("ddpctl")
def check_embedded_database(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """``ddpctl.E040``: a database left to the embedded PostgreSQL (no ``DATABASE_URL``)
    while ``pgserver`` is not installed (``ddpctl.database.database_settings``)."""
    from .database import embedded_missing
    from .embedded import MISSING_MESSAGE

    return [Error(f"DATABASES[{alias!r}]: {MISSING_MESSAGE}.", id="ddpctl.E040")
            for alias in embedded_missing(settings.DATABASES)]
