"""``ddpctl dbshell``: psql on the configured database."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess

import click

from .django_setup import django_options, setup_django


def psql_executable() -> str | None:
    """``psql`` on PATH, else the one bundled with the embedded PostgreSQL; None if neither."""
    from ..embedded import bin_dir

    found = shutil.which("psql")
    if found:
        return found
    bundled = bin_dir()
    if bundled is not None and (bundled / "psql").is_file():
        return str(bundled / "psql")
    return None


@click.command(context_settings={"ignore_unknown_options": True})
@django_options
@click.option("--database", default="default", show_default=True, metavar="ALIAS",
              help="The DATABASES entry to connect to.")
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def dbshell(ctx: click.Context, settings: str | None, pythonpath: tuple[str, ...], database: str,
            psql_args: tuple[str, ...]) -> None:
    """Run psql on the project's database, embedded or not.

    Connects with the host (or socket directory), port, user, password and database name of
    settings.DATABASES (what DATABASE_URL or the embedded PostgreSQL gave), as Django's
    dbshell does.  With the embedded PostgreSQL, the server is started for the session if no
    other process runs it.  Arguments after -- go to psql; its exit status is this command's.
    Uses psql from PATH, else the one that comes with the embedded PostgreSQL.

    \b
    Examples:
      ddpctl dbshell --settings mysite.settings
      ddpctl dbshell --settings mysite.settings -- -c 'SELECT count(*) FROM ddpctl_change'
    """
    setup_django(settings, pythonpath)
    from django.db import connections

    if database not in connections.settings:
        raise click.BadParameter(f"no database {database!r} in DATABASES "
                                 f"(there are: {', '.join(connections.settings)})", param_hint="--database")
    connection = connections[database]
    if connection.vendor != "postgresql":
        raise click.ClickException(f"DATABASES[{database!r}] is not PostgreSQL ({connection.vendor})")
    args, env = connection.client.settings_to_cmd_args_env(connection.settings_dict, list(psql_args))
    psql = psql_executable()
    if psql is None:
        raise click.ClickException(
            "psql is not installed: install PostgreSQL's client (e.g. apt-get install "
            "postgresql-client), or `pip install 'ddpctl[embedded]'`, which comes with one")
    # Ctrl-C belongs to psql (it cancels the running query), as with Django's dbshell; this
    # process waits, so that it can stop the embedded PostgreSQL afterwards if it started it.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        returncode = subprocess.run([psql, *args[1:]], env={**os.environ, **(env or {})}).returncode
    finally:
        signal.signal(signal.SIGINT, previous)
    ctx.exit(returncode)
