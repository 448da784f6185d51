"""The ``ddpctl`` console script.

``ddpctl serve`` must monkey-patch with gevent before anything imports ``socket``,
``ssl``, ``threading`` or psycopg2, so the patch happens here, before Click and the
commands are even imported.  (With ``--reload`` the parent only watches files: no patch.)
"""
from __future__ import annotations

import os
import sys

_FALSE = {"", "0", "false", "no", "off"}


def _wants_gevent(argv: list[str]) -> bool:
    words = [a for a in argv if not a.startswith("-")]
    if not words or words[0] != "serve" or "--help" in argv:
        return False
    if "--reload" in argv:
        return False
    return "--no-reload" in argv or os.environ.get("DDPCTL_RELOAD", "").lower() in _FALSE


def main() -> None:
    if _wants_gevent(sys.argv[1:]):
        from .server.gevent_patch import patch

        patch()
    from .commands import cli

    cli(prog_name="ddpctl")
