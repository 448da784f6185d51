"""``ddpctl serve`` in a subprocess on a free port, for tests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

__all__ = ["free_port", "LiveServer", "ServerDidNotStart"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerDidNotStart(RuntimeError):
    pass


class LiveServer:
    """``ddpctl serve ARGS`` on a free port, stopped with SIGTERM on exit."""

    def __init__(self, args: Sequence[str] = (), *, env: dict[str, str] | None = None,
                 cwd: str | None = None, startup_timeout: float = 30.0) -> None:
        self.port = free_port()
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/websocket"

    @property
    def sockjs_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/sockjs/123/abcdefgh/websocket"

    def start(self) -> LiveServer:
        cmd = [sys.executable, "-m", "ddpctl", "serve", "--listen", f"127.0.0.1:{self.port}",
               *self.args]
        self.process = subprocess.Popen(cmd, env=self.env, cwd=self.cwd, stdout=self._log,
                                        stderr=subprocess.STDOUT)
        try:
            self._wait_listening()
        except BaseException:  # not started, or interrupted meanwhile (Ctrl-C): no server left behind
            self.stop()
            raise
        return self

    def _wait_listening(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerDidNotStart(
                    f"ddpctl serve exited with {self.process.returncode}:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise ServerDidNotStart(
            f"ddpctl serve did not listen within {self.startup_timeout} s:\n{self.output()}")

    def output(self) -> str:
        """Everything the server printed so far."""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, then SIGKILL if needed; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._log.close()

