"""The ``ddpctl top`` screen, drawn with rich from :func:`.rates.dashboard`."""
from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

__all__ = ["render"]


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return "-"  # not reached


def _lag(row: dict[str, Any]) -> Text:
    lag = row["lag_seconds"]
    if lag is None:
        return Text("-")
    return Text(f"{lag:.1f}s", style="red" if lag >= 5 else "yellow" if lag >= 1 else "")


def _ready(row: dict[str, Any]) -> Text:
    if row["source"] != "node":
        return Text("no answer", style="yellow")
    return Text("ready", style="green") if row["ready"] else Text("NOT READY", style="bold red")


# The node table's columns, in order; when the terminal is narrower than all of them, the
# ones of _DROPPED go first, in that order (the essentials stay: connections,
# subscriptions, observers, messages/s, lag, state).
_COLUMNS = ("node", "host:pid", "conns", "subs", "observers", "msg/s", "out/s", "calls/s", "changes/s", "lag",
            "position", "buffered", "db", "errors", "state")
_DROPPED = ("position", "buffered", "host:pid", "out/s", "db", "changes/s", "calls/s", "errors")
_LEFT = ("node", "host:pid", "state")


def _node_cells(row: dict[str, Any]) -> dict[str, str | Text]:
    db = "-" if row["db_in_use"] is None else f"{row['db_in_use']}/{row['db_size']}"
    return {
        "node": row["node"], "host:pid": f"{row['hostname']}:{row['pid']}",
        "conns": _number(row["connections"]),
        "subs": _number(row["subscriptions"]), "observers": _number(row["observers"]),
        "msg/s": _number(row["messages_per_second"], 1), "out/s": _bytes(row["bytes_per_second"]),
        "calls/s": _number(row["method_calls_per_second"], 1),
        "changes/s": _number(row["changes_per_second"], 1), "lag": _lag(row),
        "position": _number(row["position"]), "buffered": _bytes(row["buffered_bytes"]), "db": db,
        "errors": _number(row["errors"]), "state": _ready(row),
    }


def _node_columns(rows: list[dict[str, Any]], width: int | None) -> list[str]:
    """The columns that fit in ``width`` characters (all without a width), none cut."""
    columns = list(_COLUMNS)
    if width is None:
        return columns
    cells = [_node_cells(row) for row in rows]
    sizes = {header: max([len(header), *(len(str(c[header])) for c in cells)]) for header in columns}
    for header in _DROPPED:
        if sum(sizes[h] + 2 for h in columns) - 2 <= width:  # a space each side, none at the edges
            break
        columns.remove(header)
    return columns


def render(view: dict[str, Any], interval: float, error: str | None = None,
           width: int | None = None) -> Group:
    """The whole screen: a summary line, the nodes, the busiest publications.  ``width``: the
    terminal's columns; the node table leaves out its less important columns to fit."""
    totals = view["totals"]
    summary = Text.assemble(
        ("ddpctl top", "bold"),
        f"  {totals['nodes']} node(s)  {_number(totals['connections'])} connections  "
        f"{_number(totals['subscriptions'])} subscriptions  {_number(totals['observers'])} observers  "
        f"{_number(totals['messages_per_second'], 1)} msg/s  "
        f"{_number(totals['method_calls_per_second'], 1)} calls/s",
        (f"   every {interval:g}s, q quits", "dim"),
    )
    parts: list[Any] = [summary]
    if error:
        parts.append(Text(error, style="bold red"))
    columns = _node_columns(view["nodes"], width)
    nodes = Table(box=None, header_style="bold", pad_edge=False, expand=False)
    for header in columns:
        nodes.add_column(header, justify="left" if header in _LEFT else "right",  # type: ignore[arg-type]
                         style="cyan" if header == "node" else None, no_wrap=True)
    for row in view["nodes"]:
        cells = _node_cells(row)
        nodes.add_row(*(cells[header] for header in columns))
    if not view["nodes"]:
        parts.append(Text("no live nodes (is `ddpctl serve` running on this database?)", style="dim"))
    else:
        parts.append(nodes)
    if view["publications"]:
        pubs = Table(title="busiest publications", title_justify="left", title_style="bold", box=None,
                     header_style="bold", pad_edge=False)
        for header in ("publication", "subs", "observers", "documents", "msg/s"):
            pubs.add_column(header, justify="left" if header == "publication" else "right")
        for pub in view["publications"]:
            pubs.add_row(pub["publication"], _number(pub["subscriptions"]), _number(pub["observers"]),
                         _number(pub["documents"]), _number(pub["messages_per_second"], 1))
        parts.extend([Text(""), pubs])
    return Group(*parts)
