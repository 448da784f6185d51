"""Database settings from ``DATABASE_URL``, or an embedded PostgreSQL when none is set.

In a settings module::

    from ddpctl.database import database_settings
    DATABASES = {"default": database_settings(embedded_dir=BASE_DIR / ".pgdata")}

``DATABASE_URL`` looks like ``postgres://user:password@host:5432/name`` (a socket
directory goes in ``?host=/path``).  Without it, the embedded PostgreSQL
(:mod:`ddpctl.embedded`, ``pip install 'ddpctl[embedded]'``) runs on a Unix socket in
``embedded_dir``, shared by every process that uses the same directory, and stopped when
the last of them exits.  Without either, the entry is marked ``EMBEDDED_MISSING`` and
system check ``ddpctl.E040`` (and every ``ddpctl`` command) says what to install or set.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import embedded

__all__ = ["parse_database_url", "database_settings", "embedded_missing", "embedded_server_url"]

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
    """Start (or join) the embedded PostgreSQL in ``data_dir`` and return its URL
    (:func:`ddpctl.embedded.server_url`; ``EmbeddedUnavailable`` without pgserver)."""
    return embedded.server_url(data_dir)


def database_settings(*, embedded_dir: str | os.PathLike[str] | None = None, env: str = "DATABASE_URL",
                      conn_max_age: int | None = None) -> dict[str, Any]:
    """``DATABASES["default"]`` from ``$DATABASE_URL``, else the embedded server in
    ``embedded_dir`` (development; without ``embedded_dir``, ``$DATABASE_URL`` is required:
    ``ImproperlyConfigured`` when it is unset).

    With neither (pgserver not installed), an entry for the socket the embedded server would
    have, with ``EMBEDDED_MISSING`` set: importing the settings still works (so ``--help`` and
    system checks do), and check ``ddpctl.E040`` reports it.  ``ValueError`` for a malformed
    URL.
    """
    url = os.environ.get(env)
    if not url and embedded_dir is None:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"${env} is not set (postgres://user:password@host:5432/name); "
                                   "pass embedded_dir= to database_settings() for an embedded server")
    try:
        config = parse_database_url(url or embedded.server_url(embedded_dir))  # type: ignore[arg-type]
    except embedded.EmbeddedUnavailable:
        config = {**parse_database_url("postgresql://postgres@/postgres"), "EMBEDDED_MISSING": True,
                  "HOST": str(Path(embedded_dir).expanduser().resolve())}
    config["CONN_MAX_AGE"] = conn_max_age  # ddpctl's database workers keep their connections
    config["CONN_HEALTH_CHECKS"] = True
    return config


def embedded_missing(databases: dict[str, dict[str, Any]]) -> list[str]:
    """The aliases of ``databases`` that need the embedded PostgreSQL, which is not installed."""
    return [alias for alias, config in databases.items() if config.get("EMBEDDED_MISSING")]
