"""``ddpctl migrate``."""
from __future__ import annotations

import click

from .django_setup import database_errors, django_options, setup_django


@click.command()
@django_options
@click.option("--noinput", is_flag=True, help="Never prompt.")
@click.option("--check", is_flag=True,
              help="Change nothing; exit 1 if migrations are unapplied or a published table lacks "
                   "its change-capture triggers, naming them.")
@click.argument("app_label", required=False)
@click.argument("migration_name", required=False)
def migrate(settings: str | None, pythonpath: tuple[str, ...], noinput: bool, check: bool,
            app_label: str | None, migration_name: str | None) -> None:
    """Create and update the tables (Django's migrate), then install change capture.

    Every model with a Collection (and its many-to-many tables), every model in
    settings.DDPCTL_CAPTURE_MODELS and every table that class-level publication queries or
    a Collection's visible() read gets triggers that record each committed INSERT, UPDATE,
    DELETE and TRUNCATE, whoever makes it: the ORM, bulk statements, raw SQL, psql, other
    services.  Running it again is safe; live state is never wiped.

    A model with a Collection whose table does not exist (its app has no migration
    for it) stops it with exit code 1 and the fix, before any trigger is installed.

    \b
    Examples:
      ddpctl migrate --settings mysite.settings
      ddpctl migrate --settings mysite.settings --check    # in CI or a deploy check
    """
    setup_django(settings, pythonpath)
    args = [a for a in (app_label, migration_name) if a]
    with database_errors():  # an unreachable or missing database: one line, no traceback
        _migrate(args, noinput, check)


def _migrate(args: list[str], noinput: bool, check: bool) -> None:
    from django.core.management import call_command

    from ..livedata import capture

    if check:
        problems = []
        try:
            call_command("migrate", *args, check_unapplied=True, verbosity=0)
        except SystemExit:
            problems.append("unapplied migrations (run: ddpctl migrate)")
        absent = capture.missing_tables()
        if absent is not None:
            problems.extend(absent.problems)
        lacking = [] if absent is not None else capture.missing()
        if lacking:
            problems.append("tables read by publications without change-capture triggers: "
                            + ", ".join(lacking))
        if problems:
            raise click.ClickException("; ".join(problems))
        click.echo(f"ok: migrations applied; change capture on {len(capture.targets())} table(s)")
        return
    from django.core.management.base import CommandError

    try:
        # Django's migrate sends post_migrate, which installs change capture (ddpctl.apps);
        # install() again reports what it did and removes stale triggers.
        call_command("migrate", *args, interactive=not noinput)
        installed, removed = capture.install()
    except (CommandError, capture.MissingTables) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Change capture installed on {len(installed)} table(s): {', '.join(installed) or '-'}")
    if removed:
        click.echo(f"Change capture removed from tables no longer published: {', '.join(removed)}")
