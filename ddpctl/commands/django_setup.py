"""``--settings``/``--pythonpath`` options and Django setup with one-line errors."""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

__all__ = ["database_errors", "django_options", "raw_connection", "setup_django"]


def django_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--pythonpath", envvar="DDPCTL_PYTHONPATH", multiple=True,
        type=click.Path(file_okay=False, resolve_path=True),
        help="A directory to add to the Python path (repeatable; relative to the current directory). "
             "The current directory "
             f"is always on it.  [env: DDPCTL_PYTHONPATH, '{os.pathsep}'-separated]")(command)
    command = click.option(
        "--settings", envvar=["DDPCTL_SETTINGS", "DJANGO_SETTINGS_MODULE"], metavar="MODULE",
        help="Django settings module, e.g. mysite.settings.  "
             "[env: DDPCTL_SETTINGS or DJANGO_SETTINGS_MODULE]")(command)
    return command


def setup_django(settings: str | None, pythonpath: tuple[str, ...] = ()) -> None:
    """Import the settings and run ``django.setup()``; ``ClickException`` on failure."""
    for path in reversed(pythonpath):
        sys.path.insert(0, os.path.abspath(path))
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    if not settings:
        raise click.UsageError("no Django settings: pass --settings MODULE or set "
                               "DJANGO_SETTINGS_MODULE")
    from django.core.exceptions import ImproperlyConfigured

    try:
        importlib.import_module(settings)
    except ImportError as exc:
        raise click.ClickException(f"cannot import settings module {settings!r}: {exc}") from None
    except (ValueError, ImproperlyConfigured) as exc:  # e.g. a malformed DATABASE_URL
        raise click.ClickException(f"settings {settings!r}: {exc}") from None
    os.environ["DJANGO_SETTINGS_MODULE"] = settings
    import django

    try:
        django.setup()
    except ImproperlyConfigured as exc:
        raise click.ClickException(f"settings {settings!r}: {exc}") from None
    from django.conf import settings as django_settings

    from ..database import embedded_missing
    from ..embedded import MISSING_MESSAGE

    if "default" in embedded_missing(django_settings.DATABASES):
        raise click.ClickException(MISSING_MESSAGE)


def raw_connection(application_name: str) -> Any:
    """A psycopg2 connection (autocommit) to Django's default database, for LISTEN and long reads."""
    import psycopg2
    import psycopg2.extensions
    from django.db import connections

    params = connections["default"].get_connection_params()
    params.pop("cursor_factory", None)
    conn = psycopg2.connect(**{**params, "application_name": application_name})
    conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
    return conn


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    """Database failures as one-line CLI errors (with the fix when ddpctl's tables are missing)."""
    import psycopg2
    from django.db import DatabaseError

    try:
        yield
    except (DatabaseError, psycopg2.Error) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "ddpctl_" in text and "does not exist" in text:
            raise click.ClickException(f"{text} (run: ddpctl migrate)") from None
        raise click.ClickException(f"database error: {text}") from None
