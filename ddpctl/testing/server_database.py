"""Pointing a ``ddpctl serve`` subprocess at the test's database.

pytest-django's ``django_db_setup`` creates ``test_<NAME>`` and points this process's
connections at it; a server subprocess imports the project's settings afresh and would use
the development database.  :func:`server_settings` writes a settings module that imports
the project's settings and replaces ``DATABASES`` with this process's connection settings
(handed over as JSON in an environment variable), so the server uses the test database
whatever the settings do; ``DATABASE_URL`` is set too, for settings that read it at import
(:func:`ddpctl.database.database_settings` then starts no embedded PostgreSQL).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["DATABASES_VARIABLE", "database_url", "server_settings"]

DATABASES_VARIABLE = "DDPCTL_TEST_SERVER_DATABASES"
_MODULE = "ddpctl_test_server_settings"
_TEMPLATE = '''"""A `ddpctl serve` started by ddpctl's pytest plugin: {settings} on the test database."""
import json as _json
import os as _os

from {settings} import *  # noqa: F403

DATABASES = _json.loads(_os.environ[{variable!r}])
'''


def database_url(settings_dict: dict[str, Any]) -> str:
    """A ``postgres://`` URL for a Django ``DATABASES`` entry (a socket directory as
    ``?host=``), as :func:`ddpctl.database.parse_database_url` reads it."""
    user = quote(settings_dict.get("USER") or "", safe="")
    password = settings_dict.get("PASSWORD") or ""
    auth = (user + (":" + quote(password, safe="") if password else "") + "@") if user or password else ""
    host = settings_dict.get("HOST") or ""
    port = settings_dict.get("PORT") or ""
    name = quote(settings_dict.get("NAME") or "", safe="")
    if host.startswith("/"):
        return f"postgresql://{auth}{':' + str(port) if port else ''}/{name}?host={quote(host, safe='')}"
    netloc = f"[{host}]" if ":" in host else host
    return f"postgresql://{auth}{netloc}{':' + str(port) if port else ''}/{name}"


def server_settings(directory: Path, settings_module: str) -> tuple[list[str], dict[str, str]]:
    """Write the settings module into ``directory``; ``(ddpctl serve arguments, environment)``
    that make a server use this process's database connections (the test database).

    ``ValueError`` if a connection's settings cannot be handed over as JSON.
    """
    from django.db import connections

    databases = {alias: dict(connections[alias].settings_dict) for alias in connections}
    try:
        encoded = json.dumps(databases)
    except TypeError as exc:
        raise ValueError(f"the DATABASES settings cannot be handed to a `ddpctl serve` subprocess as "
                         f"JSON ({exc}); override the ddp_server fixture") from None
    (directory / f"{_MODULE}.py").write_text(_TEMPLATE.format(settings=settings_module,
                                                               variable=DATABASES_VARIABLE))
    # The server imports what this process imports: the project, its settings, conftest's paths.
    pythonpath = [str(directory), *(p for p in sys.path if p and os.path.isdir(p))]
    env = {
        DATABASES_VARIABLE: encoded,
        "DATABASE_URL": database_url(databases["default"]),
        "PYTHONPATH": os.pathsep.join(pythonpath),
        "DJANGO_SETTINGS_MODULE": _MODULE,
    }
    return ["--settings", _MODULE], env
