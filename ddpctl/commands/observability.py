"""``ddpctl serve``'s options for health endpoints and Prometheus metrics."""
from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import click

from ..config import ServeConfig, parse_listen
from .seconds import Seconds

__all__ = ["OBSERVABILITY_OPTIONS", "apply_observability", "metrics_listener", "multiprocess_metrics",
           "observability_options",
           "observability_rows"]

_RESERVED = ("/websocket", "/sockjs")

# The parameter names of observability_options(), which apply_observability() takes.
OBSERVABILITY_OPTIONS = ("metrics", "metrics_path", "metrics_address", "liveness_path", "readiness_path",
                         "ready_max_lag")


def _path(ctx: click.Context, param: click.Parameter, value: str) -> str:
    value = value.strip()
    if not value:
        return ""  # off
    if not value.startswith("/") or any(c.isspace() or c in "?#" for c in value):
        raise click.BadParameter(f"{value!r} is not a URL path (like /metrics)")
    if any(value == r or value.startswith(r + "/") for r in _RESERVED):
        raise click.BadParameter(f"{value!r} is DDP's own path")
    return value


def _address(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def observability_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--metrics/--no-metrics", "metrics", default=True, show_default=True,
                     envvar="DDPCTL_METRICS",
                     help="Serve Prometheus metrics (docs/monitoring.rst).  [env: DDPCTL_METRICS]"),
        click.option("--metrics-path", default="/metrics", show_default=True, callback=_path,
                     envvar="DDPCTL_METRICS_PATH", metavar="PATH",
                     help="Where the metrics are served.  [env: DDPCTL_METRICS_PATH]"),
        click.option("--metrics-address", callback=_address, envvar="DDPCTL_METRICS_ADDRESS",
                     metavar="HOST:PORT",
                     help="Serve the metrics on a listener of their own (plain HTTP, with the health "
                          "endpoints too) instead of on the main listeners: keeps them off the public "
                          "port, e.g. 127.0.0.1:9100.  [env: DDPCTL_METRICS_ADDRESS]"),
        click.option("--liveness-path", default="/healthz", show_default=True, callback=_path,
                     envvar="DDPCTL_LIVENESS_PATH", metavar="PATH",
                     help="Liveness endpoint: 200 and JSON while the process serves ('' turns it "
                          "off).  [env: DDPCTL_LIVENESS_PATH]"),
        click.option("--readiness-path", default="/readyz", show_default=True, callback=_path,
                     envvar="DDPCTL_READINESS_PATH", metavar="PATH",
                     help="Readiness endpoint: 200 while the change dispatcher is connected to "
                          "PostgreSQL (LISTEN) and caught up, else 503 with the reason, as JSON ('' "
                          "turns it off).  [env: DDPCTL_READINESS_PATH]"),
        click.option("--ready-max-lag", type=Seconds(min=0.1), default=10.0, show_default=True,
                     envvar="DDPCTL_READY_MAX_LAG", metavar="SECONDS",
                     help="Not ready while the dispatcher is more than this far behind the "
                          "changelog.  [env: DDPCTL_READY_MAX_LAG]"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def apply_observability(config: ServeConfig, values: dict[str, Any]) -> tuple[str, int] | None:
    """Put the options' ``values`` in ``config``; the metrics listener's address, if any.
    ``click.UsageError`` if two endpoints share a path."""
    config.metrics = values["metrics"]
    config.metrics_path = values["metrics_path"] if config.metrics else ""
    config.liveness_path = values["liveness_path"]
    config.readiness_path = values["readiness_path"]
    config.ready_max_lag = values["ready_max_lag"]
    config.metrics_address = values["metrics_address"]
    if config.metrics and not config.metrics_path:
        raise click.UsageError("--metrics-path cannot be empty (turn metrics off with --no-metrics)")
    paths = [p for p in (config.metrics_path, config.liveness_path, config.readiness_path) if p]
    if len(set(paths)) < len(paths):
        raise click.UsageError("--metrics-path, --liveness-path and --readiness-path must differ")
    return values["metrics_address"]


def metrics_listener(address: tuple[str, int] | None, reuse_port: bool) -> list[Any]:
    """The bound socket of ``--metrics-address`` (none without it); ClickException if taken."""
    if address is None:
        return []
    from ..server.runner import bind_sockets

    try:
        return bind_sockets([address], reuse_port=reuse_port)
    except OSError as exc:
        raise click.ClickException(f"--metrics-address: {exc.strerror or exc}") from None


@contextlib.contextmanager
def multiprocess_metrics(config: ServeConfig) -> Iterator[Callable[[int], None] | None]:
    """``serve --workers N``: prometheus_client's multiprocess mode while the workers run
    (:mod:`ddpctl.server.metrics`); yields what to call when a worker exits."""
    if not config.metrics:
        yield None
        return
    from ..server.metrics import enable_multiprocess, forget_process

    directory, created = enable_multiprocess()
    config.metrics_multiprocess = True
    try:
        yield lambda pid: forget_process(pid, directory)
    finally:
        if created:
            shutil.rmtree(directory, ignore_errors=True)


def observability_rows(table: Any, config: ServeConfig, addresses: list[tuple[str, int]]) -> None:
    """The start-up banner's lines for the health endpoints and metrics."""
    if not addresses:
        return
    main = _url(config.scheme, *addresses[0])
    paths = [p for p in (config.liveness_path, config.readiness_path) if p]
    if paths:
        table.add_row("health", "  ·  ".join(f"{main}{p}" for p in paths))
    if config.metrics:
        where = _url("http", *config.metrics_address) if config.metrics_address else main
        table.add_row("metrics", f"{where}{config.metrics_path}")


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"
