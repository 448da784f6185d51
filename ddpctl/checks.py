"""System checks (``ddpctl.E0xx`` errors, ``ddpctl.W0xx`` warnings)."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register


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
    return problems
