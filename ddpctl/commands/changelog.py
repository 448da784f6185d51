"""``ddpctl changelog prune``."""

from __future__ import annotations

import datetime

import click

from .django_setup import database_errors, django_options, setup_django


@click.group()
def changelog() -> None:
    """The change log every node reads (ddpctl_change)."""


@changelog.command("prune")
@django_options
@click.option(
    "--older-than",
    metavar="DURATION",
    help="Delete changes older than this (90s, 15m, 2h, 7d).  Default: the "
    "DDPCTL_CHANGELOG_RETENTION setting (7 days if unset).",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
def changelog_prune(
    settings: str | None, pythonpath: tuple[str, ...], older_than: str | None, dry_run: bool
) -> None:
    """Delete old changes from the changelog.

    Serving nodes do this by themselves once an hour with DDPCTL_CHANGELOG_RETENTION
    (None keeps everything).  Changes older than the retention can no longer be
    replayed or followed with `tail --since`.  Live delivery is unaffected: nodes read a
    change within moments of its commit.

    \b
    Examples:
      ddpctl changelog prune --settings mysite.settings
      ddpctl changelog prune --older-than 2d --dry-run
    """
    setup_django(settings, pythonpath)
    from django.db import connection

    from ..livedata.changelog import configured_retention, prune
    from ..timespec import parse_duration

    if older_than is not None:
        try:
            retention = parse_duration(older_than)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--older-than") from None
    else:
        try:
            retention = configured_retention()
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        if retention is None:
            click.echo(
                "DDPCTL_CHANGELOG_RETENTION is None (keep everything): nothing to do; "
                "use --older-than to prune anyway"
            )
            return
    before = datetime.datetime.now(datetime.UTC) - retention
    with database_errors(), connection.cursor() as cursor:
        if dry_run:
            cursor.execute("SELECT count(*) FROM ddpctl_change WHERE at < %s", (before,))
            click.echo(
                f"dry run: would delete {cursor.fetchone()[0]} change(s) made before "
                f"{before.astimezone().isoformat(timespec='seconds')}"
            )
            return
        deleted = prune(cursor, before)
    click.echo(f"deleted {deleted} change(s) made before {before.astimezone().isoformat(timespec='seconds')}")
