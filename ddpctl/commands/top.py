"""``ddpctl top``."""
from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from .django_setup import database_errors, django_options, raw_connection, setup_django
from .output import json_default, json_option
from .seconds import Seconds


@click.command()
@django_options
@click.option("--interval", type=Seconds(min=0.2, max=3600), default=1.0, show_default=True,
              metavar="SECONDS", help="Refresh period; with --json, the time between the two readings "
                                      "the rates come from.")
@click.option("--timeout", type=Seconds(min=0.05, max=60), default=1.0, show_default=True, metavar="SECONDS",
              help="How long to wait for the nodes' answers; a node that does not answer in time is "
                   "shown from the registry (connections and subscriptions only).")
@click.option("--publications", "top", type=click.IntRange(min=0), default=10, show_default=True, metavar="N",
              help="How many of the busiest publications to show.")
@json_option
def top(settings: str | None, pythonpath: tuple[str, ...], interval: float, timeout: float, top: int,
        as_json: bool) -> None:
    """A live dashboard of every node: connections, subscriptions, observers, messages/s,
    dispatcher lag, and the busiest publications.  q (or Ctrl-C) quits.

    Each refresh asks every live node for its counters through the control channel
    (a row in ddpctl_command and NOTIFY ddpctl_control, answered by the node within
    milliseconds); rates come from two readings.  Publications are ranked by the
    messages their observers send per second, then by subscriptions.

    With --json (or when stdout is not a terminal) it takes two readings --interval
    apart, prints one snapshot and exits.

    \b
    Examples:
      ddpctl top --settings mysite.settings
      ddpctl top --json | jq '.nodes[] | {node, lag_seconds}'
    """
    setup_django(settings, pythonpath)
    try:
        if as_json or not sys.stdout.isatty():
            view = _once(interval, timeout, top)
            if as_json:
                click.echo(json.dumps(view, default=json_default, indent=2))
            else:
                from rich.console import Console

                from ..dashboard.view import render

                Console(highlight=False, width=200).print(render(view, interval))  # not cut at 80
            return
        _live(interval, timeout, top)
    except KeyboardInterrupt:
        pass  # Ctrl-C: a normal way out


def _once(interval: float, timeout: float, top: int) -> dict[str, Any]:
    from ..dashboard.rates import dashboard
    from ..dashboard.snapshot import take_snapshot

    with database_errors():
        conn = raw_connection("ddpctl-top")
        try:
            with conn.cursor() as cursor:
                first = take_snapshot(cursor, timeout)
                time.sleep(max(0.0, first.taken_at + interval - time.monotonic()))
                second = take_snapshot(cursor, timeout)
        finally:
            conn.close()
    return dashboard(first, second, top)


def _live(interval: float, timeout: float, top: int) -> None:
    import psycopg2
    from django.db import DatabaseError
    from rich.console import Console
    from rich.live import Live

    from ..dashboard.keys import Keyboard
    from ..dashboard.rates import dashboard
    from ..dashboard.snapshot import Snapshot, take_snapshot
    from ..dashboard.view import render

    console = Console(highlight=False)
    conn = None
    previous: Snapshot | None = None
    view = dashboard(None, Snapshot())
    try:
        with Keyboard() as keys, Live(console=console, screen=True, auto_refresh=False) as live:
            while True:
                started = time.monotonic()
                error = None
                try:
                    if conn is None:
                        conn = raw_connection("ddpctl-top")
                    with conn.cursor() as cursor:
                        current = take_snapshot(cursor, timeout)
                    view, previous = dashboard(previous, current, top), current
                except (psycopg2.Error, DatabaseError) as exc:  # keep going: the database may come back
                    text = str(exc).strip()
                    error = f"database error: {text.splitlines()[0] if text else repr(exc)}"
                    if conn is not None:
                        conn.close()
                    conn = None
                live.update(render(view, interval, error, width=console.width), refresh=True)
                while True:  # the keys pressed meanwhile, at least once even if the nodes were slow
                    left = started + interval - time.monotonic()
                    if any(key in "qQ" for key in keys.wait(max(0.0, left))):
                        return
                    if left <= 0:
                        break
    finally:
        if conn is not None:
            conn.close()
