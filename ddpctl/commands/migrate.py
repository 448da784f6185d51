"""``ddpctl migrate``."""
from __future__ import annotations

import click

from .django_setup import django_options, setup_django


@click.command()
@django_options
@click.option("--noinput", is_flag=True, help="Never prompt.")
@click.argument("app_label", required=False)
@click.argument("migration_name", required=False)
def migrate(settings: str | None, pythonpath: tuple[str, ...], noinput: bool,
            app_label: str | None, migration_name: str | None) -> None:
    """Create and update the database tables (Django's migrate).

    \b
    Example:
      ddpctl migrate --settings mysite.settings
    """
    setup_django(settings, pythonpath)
    from django.core.management import call_command

    args = [a for a in (app_label, migration_name) if a]
    call_command("migrate", *args, interactive=not noinput)
