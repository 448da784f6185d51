"""Logging setup for the CLI: to stderr, as text lines or JSON lines, with stable timestamps.

Every record's time is ISO 8601 with its UTC offset, in the process's local time zone as it
was when logging was configured (``TZ=UTC ddpctl serve`` for UTC).  It never changes while
the process runs: Django's settings set ``os.environ['TZ']`` to ``TIME_ZONE`` and call
``time.tzset()`` when they load, which would otherwise switch the zone of :mod:`logging`'s
default ``time.localtime`` timestamps in the middle of a log.

Two formats (``--log-format``, the ``DDPCTL_LOG_FORMAT`` environment variable or, for
``ddpctl serve``, Django setting):

* ``text``: ``2026-11-30T15:04:05.123+01:00 INFO    ddpctl.server.runner: stopped``;
* ``json``: one object per line, for log shippers:
  ``{"time": "...", "level": "INFO", "logger": "...", "message": "...", "exception": null}``
  (``exception``: the formatted traceback, when the record has one).
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import sys

__all__ = ["FORMATS", "LEVELS", "JSONFormatter", "TextFormatter", "configure_logging", "log_format_in_use"]

LEVELS = ["critical", "error", "warning", "info", "debug"]
FORMATS = ["text", "json"]
FORMAT_ENV = "DDPCTL_LOG_FORMAT"


def _local_zone() -> datetime.tzinfo:
    """The local time zone now, as a fixed offset (``datetime.timezone``)."""
    zone = datetime.datetime.now().astimezone().tzinfo
    assert zone is not None
    return zone


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: MESSAGE`` lines; ``TIME`` is ISO 8601 with milliseconds and the
    offset of ``zone`` (fixed when the formatter is made)."""

    def __init__(self, zone: datetime.tzinfo | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.zone = zone or _local_zone()

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.datetime.fromtimestamp(record.created, self.zone).isoformat(timespec="milliseconds")


class JSONFormatter(TextFormatter):
    """One JSON object per record, on one line: ``time`` (as :class:`TextFormatter`),
    ``level``, ``logger``, ``message`` (arguments merged) and ``exception`` (the traceback
    text, or ``null``)."""

    def format(self, record: logging.LogRecord) -> str:
        exception = None
        if record.exc_info:
            exception = self.formatException(record.exc_info)
        elif record.exc_text:
            exception = record.exc_text
        if record.stack_info:
            exception = (exception + "\n" if exception else "") + self.formatStack(record.stack_info)
        return json.dumps({
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "exception": exception,
        }, ensure_ascii=False, default=str)


def _formatter(log_format: str) -> logging.Formatter:
    if log_format not in FORMATS:
        raise ValueError(f"unknown log format {log_format!r} (one of: {', '.join(FORMATS)})")
    return JSONFormatter() if log_format == "json" else TextFormatter()


_handler: logging.Handler | None = None


def configure_logging(level: str, log_format: str | None = None) -> None:
    """Log records of ``level`` and above to stderr, in ``log_format`` (``text`` or ``json``;
    ``None``: the ``DDPCTL_LOG_FORMAT`` environment variable, else ``text``).  The time zone of
    the timestamps is fixed now.  ``ValueError`` for an unknown format."""
    global _handler
    log_format = log_format or os.environ.get(FORMAT_ENV, "").strip().lower() or "text"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    _handler = handler
    root.setLevel(level.upper())
    # pgserver narrates every pg_ctl call at INFO.
    logging.getLogger("pgserver").setLevel(max(root.level, logging.WARNING))
    # The HTTP layer writes one access line per request; keep them for debug only.
    logging.getLogger("ddpctl.access").setLevel(max(logging.DEBUG, root.level, logging.INFO)
                                                if level == "debug" else logging.WARNING)


def log_format_in_use() -> str | None:
    """``text`` or ``json``: the format of the handler :func:`configure_logging` installed."""
    if _handler is None:
        return None
    return "json" if isinstance(_handler.formatter, JSONFormatter) else "text"
