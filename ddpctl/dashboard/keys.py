"""Single key presses from the terminal, for ``ddpctl top`` (``q`` quits)."""
from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from typing import Any, TextIO

__all__ = ["Keyboard"]


class Keyboard:
    """Within ``with``: the terminal on stdin in cbreak mode (a key arrives without Enter
    and is not echoed; Ctrl-C still raises ``KeyboardInterrupt``), restored on exit.  If
    stdin is not a terminal, :meth:`wait` only waits."""

    def __init__(self, stream: TextIO | None = None) -> None:
        stream = stream or sys.stdin
        self._fd = stream.fileno() if stream is not None and stream.isatty() else None
        self._saved: Any = None

    def __enter__(self) -> Keyboard:
        if self._fd is not None:
            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def wait(self, timeout: float) -> str:
        """The keys pressed within ``timeout`` seconds (returns at the first), or ``""``."""
        if self._fd is None:
            time.sleep(max(0.0, timeout))
            return ""
        ready, _, _ = select.select([self._fd], [], [], max(0.0, timeout))
        if not ready:
            return ""
        data = os.read(self._fd, 64)
        if not data:  # the terminal went away: wait out the time instead of spinning
            time.sleep(max(0.0, timeout))
        return data.decode("utf-8", "replace")
