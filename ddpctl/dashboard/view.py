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


def render(view: dict[str, Any], interval: float, error: str | None = None) -> Group:
    """The whole screen: a summary line, the nodes, the busiest publications."""
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
    nodes = Table(box=None, header_style="bold", pad_edge=False, expand=False)
    for header, justify in (("node", "left"), ("host:pid", "left"), ("conns", "right"), ("subs", "right"),
                            ("observers", "right"), ("msg/s", "right"), ("out/s", "right"),
                            ("calls/s", "right"), ("changes/s", "right"), ("lag", "right"),
                            ("position", "right"), ("buffered", "right"), ("db", "right"),
                            ("errors", "right"), ("state", "left")):
        nodes.add_column(header, justify=justify, style="cyan" if header == "node" else None,  # type: ignore[arg-type]
                         no_wrap=header in ("node", "host:pid"))
    for row in view["nodes"]:
        db = "-" if row["db_in_use"] is None else f"{row['db_in_use']}/{row['db_size']}"
        nodes.add_row(
            row["node"], f"{row['hostname']}:{row['pid']}", _number(row["connections"]),
            _number(row["subscriptions"]), _number(row["observers"]), _number(row["messages_per_second"], 1),
            _bytes(row["bytes_per_second"]), _number(row["method_calls_per_second"], 1),
            _number(row["changes_per_second"], 1), _lag(row), _number(row["position"]),
            _bytes(row["buffered_bytes"]), db, _number(row["errors"]), _ready(row))
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
