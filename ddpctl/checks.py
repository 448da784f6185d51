"""System checks (``ddpctl.E0xx`` errors, ``ddpctl.W0xx`` warnings)."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register("ddpctl")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    problems: list[Error | Warning] = []
    engine = settings.DATABASES.get("default", {}).get("ENGINE", "")
    if "postgresql" not in engine and "postgis" not in engine:
        problems.append(Error(
            f"ddpctl needs PostgreSQL, but DATABASES['default'] uses {engine or 'nothing'!r}.",
            hint="Set DATABASES['default'] to django.db.backends.postgresql "
                 "(ddpctl.database.database_settings() reads DATABASE_URL).",
            id="ddpctl.E001"))
    from .config import db_connections_setting

    try:
        db_connections_setting()
    except ValueError as exc:
        problems.append(Error(str(exc), id="ddpctl.E002"))
    from .livedata.changelog import configured_retention

    try:
        configured_retention()
    except ValueError as exc:
        problems.append(Error(str(exc), id="ddpctl.E003"))
    from .ratelimit.config import read_settings

    try:
        read_settings()
    except ValueError as exc:
        problems.append(Error(str(exc), id="ddpctl.E010",
                              hint="See 'Rate limits' in the ddpctl README."))
    return problems


@register(Tags.database)
def check_capture(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Warning]:
    """``ddpctl.W001``: a table that Collections, ``DDPCTL_CAPTURE_MODELS`` or a traced queryset
    read lacks its change-capture triggers (``manage.py check --database default``)."""
    if not databases or "default" not in databases:
        return []
    from django.db import DatabaseError

    from .livedata.capture import missing

    try:
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
