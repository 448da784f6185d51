"""Logging setup for the CLI: one format, to stderr."""
from __future__ import annotations

import logging
import sys

LEVELS = ["critical", "error", "warning", "info", "debug"]


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pgserver narrates every pg_ctl call at INFO.
    logging.getLogger("pgserver").setLevel(max(root.level, logging.WARNING))
    # The HTTP layer writes one access line per request; keep them for debug only.
    logging.getLogger("ddpctl.access").setLevel(max(logging.DEBUG, root.level, logging.INFO)
                                                if level == "debug" else logging.WARNING)
