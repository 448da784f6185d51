"""SIGINT (Ctrl-C) and SIGTERM stop every ddpctl command, whatever disposition it inherited.

A process started as a background job of a non-interactive shell (``ddpctl tail &`` in a
script, CI steps, some process managers) inherits SIGINT (and SIGQUIT) *ignored* (POSIX,
"Shell Command Language" 2.11), and a process keeps an ignored signal ignored across
``exec``.  Python then installs no ``KeyboardInterrupt`` handler, so Ctrl-C, ``kill -INT``
and tools that stop with SIGINT have no effect.  Default SIGTERM ends the process at once,
without the cleanup a ``finally`` does (closing database connections, flushing output).

:func:`handle_stop_signals` runs when any ``ddpctl`` command starts (the command group
calls it) and makes both signals raise ``KeyboardInterrupt`` in the main thread.  ``ddpctl
serve`` then replaces them with its graceful shutdown (:mod:`ddpctl.server.runner`,
:mod:`ddpctl.server.supervisor`).
"""
from __future__ import annotations

import logging
import signal
from types import FrameType

__all__ = ["STOP_SIGNALS", "handle_stop_signals"]

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def handle_stop_signals(signals: tuple[int, ...] = STOP_SIGNALS) -> None:
    """Make each of ``signals`` (SIGINT and SIGTERM) raise ``KeyboardInterrupt`` (an
    inherited ``SIG_IGN`` too).  A test session adds SIGHUP (which kills without running
    ``atexit``), so that it tears down and stops its embedded PostgreSQL.

    Call it from the main thread (``ValueError`` otherwise, as ``signal.signal``).
    """
    for signum in signals:
        if signal.getsignal(signum) == signal.SIG_IGN:
            logger.debug("%s was ignored (inherited); handling it", signal.Signals(signum).name)
        signal.signal(signum, _interrupt)
