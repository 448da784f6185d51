"""The Click command group; one thin module per command."""
from __future__ import annotations

import os

import click

from .. import __version__
from .changelog import changelog
from .conns import conns
from .dbshell import dbshell
from .meteor import meteor
from .migrate import migrate
from .nodes import nodes
from .replay import replay
from .serve import serve
from .subs import subs
from .tail import tail
from .top import top


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ddpctl")
def cli() -> None:
    """ddpctl: serve Meteor's DDP from Django models in PostgreSQL.

    \b
    Quick start, in a Django project with 'ddpctl' in INSTALLED_APPS:
      ddpctl migrate --settings mysite.settings
      ddpctl serve --settings mysite.settings

    \b
    Operating it, on every node at once:
      ddpctl subs ls / conns ls / nodes ls    who is connected and subscribed
      ddpctl top                              live dashboard of every node
      ddpctl tail                             changes as they are committed
      ddpctl replay --since 10m               send past changes again
      ddpctl dbshell                          psql on the configured database

    \b
    Meteor front ends:
      ddpctl meteor build ./app -o ./build    then: ddpctl serve --meteor-bundle ./build

    Every option can also come from an environment variable (shown in each
    command's --help), e.g. DDPCTL_LISTEN=0.0.0.0:8000; DDPCTL_LOG_FORMAT=json makes
    every command log JSON lines.  Ctrl-C or SIGTERM stops any command, even one started
    with SIGINT ignored (a background job of a shell script).
    """
    from ..log import FORMAT_ENV, FORMATS
    from ..stop_signals import handle_stop_signals

    handle_stop_signals()
    log_format = os.environ.get(FORMAT_ENV, "").strip().lower()
    if log_format and log_format not in FORMATS:
        raise click.UsageError(f"{FORMAT_ENV}={log_format!r} is not one of: {', '.join(FORMATS)}")


for command in (serve, migrate, subs, conns, nodes, top, tail, replay, changelog, meteor, dbshell):
    cli.add_command(command)
