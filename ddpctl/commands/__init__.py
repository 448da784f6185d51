"""The Click command group; one thin module per command."""
from __future__ import annotations

import click

from .. import __version__
from .migrate import migrate
from .serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ddpctl")
def cli() -> None:
    """ddpctl: serve Meteor's DDP from Django models in PostgreSQL.

    \b
    Quick start, in a Django project with 'ddpctl' in INSTALLED_APPS:
      ddpctl migrate --settings mysite.settings
      ddpctl serve --settings mysite.settings

    Every option can also come from an environment variable (shown in each
    command's --help), e.g. DDPCTL_LISTEN=0.0.0.0:8000.
    """


cli.add_command(serve)
cli.add_command(migrate)
