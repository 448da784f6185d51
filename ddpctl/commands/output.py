"""Command output that fits where it goes: a rich table on a terminal, tab-separated plain
text in a pipe, or JSON with ``--json``."""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

__all__ = ["Column", "age", "emit_table", "json_default", "json_option", "stderr_console"]


class Column:
    def __init__(
        self,
        key: str,
        header: str,
        render: Callable[[Any], str] | None = None,
        style: str | None = None,
        justify: str = "left",
    ) -> None:
        self.key, self.header, self.style, self.justify = key, header, style, justify
        self.render = render or (lambda v: "" if v is None else str(v))


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Write JSON (for scripts) instead of a table."
)


def json_default(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def age(moment: datetime.datetime | None) -> str:
    """``3s``, ``4m12s``, ``2h05m``, ``3d04h``: how long ago ``moment`` was."""
    if moment is None:
        return ""
    seconds = max(0, int((datetime.datetime.now(datetime.UTC) - moment).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def emit_table(
    columns: Sequence[Column],
    rows: list[dict[str, Any]],
    as_json: bool,
    *,
    title: str = "",
    empty: str = "nothing to list",
) -> None:
    if as_json:
        click.echo(json.dumps(rows, default=json_default, indent=2))
        return
    if not sys.stdout.isatty():
        click.echo("\t".join(c.header.upper() for c in columns))
        for row in rows:
            click.echo("\t".join(c.render(row.get(c.key)).replace("\t", " ") for c in columns))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    if not rows:
        console.print(f"[dim]{empty}[/dim]")
        return
    table = Table(title=title or None, title_justify="left", header_style="bold", box=None, pad_edge=False)
    for column in columns:
        table.add_column(column.header, style=column.style, justify=column.justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(column.render(row.get(column.key)) for column in columns))
    console.print(table)
