"""Database settings from ``DATABASE_URL``, or an embedded PostgreSQL when none is set.

In a settings module::

    from ddpctl.database import database_settings
    DATABASES = {"default": database_settings(embedded_dir=BASE_DIR / ".pgdata")}

``DATABASE_URL`` looks like ``postgres://user:password@host:5432/name`` (a socket
directory goes in ``?host=/path``).  Without it, the ``pgserver`` package runs a private
PostgreSQL on a Unix socket in ``embedded_dir``, shared by every process that uses the
same directory, and stopped when the last of them exits.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["parse_database_url", "database_settings", "embedded_server_url"]

logger = logging.getLogger(__name__)
_SCHEMES = {"postgres", "postgresql", "pgsql", "postgis"}


def parse_database_url(url: str) -> dict[str, Any]:
    """A Django ``DATABASES`` entry for a PostgreSQL URL."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"unsupported database URL scheme {parts.scheme!r} (use postgres://)")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    host = query.pop("host", None) or unquote(parts.hostname or "")
    engine = ("django.contrib.gis.db.backends.postgis" if parts.scheme == "postgis"
              else "django.db.backends.postgresql")
    return {
        "ENGINE": engine,
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(parts.port or ""),
        "OPTIONS": query,
    }


def embedded_server_url(data_dir: str | os.PathLike[str]) -> str:
    """Start (or join) the embedded PostgreSQL in ``data_dir`` and return its URL."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); /tmp is fine.
        warnings.simplefilter("ignore")
        import pgserver  # imported lazily: only needed without DATABASE_URL

    path = Path(data_dir).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("using the embedded PostgreSQL in %s", path)
    return pgserver.get_server(path, cleanup_mode="stop").get_uri()


def database_settings(*, embedded_dir: str | os.PathLike[str], env: str = "DATABASE_URL",
                      conn_max_age: int | None = None) -> dict[str, Any]:
    """``DATABASES["default"]`` from ``$DATABASE_URL``, else the embedded server."""
    url = os.environ.get(env) or embedded_server_url(embedded_dir)
    config = parse_database_url(url)
    config["CONN_MAX_AGE"] = conn_max_age  # ddpctl's database workers keep their connections
    config["CONN_HEALTH_CHECKS"] = True
    return config
