"""Helpers for testing a ddpctl project: a live ``ddpctl serve`` process and a DDP client.

    from ddpctl.testing import LiveServer, DDPClient

    with LiveServer(["--settings", "mysite.settings"]) as server:
        with DDPClient(server.ws_url) as client:
            assert client.call("add", 1, 2) == 3

``DDPClient`` needs the ``websocket-client`` package (``pip install ddpctl[test]``).
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from .ddp.ejson import from_json_value, to_json_value
from .ddp.errors import MeteorError

__all__ = ["free_port", "LiveServer", "DDPClient", "ServerDidNotStart"]

_SOCKJS_URL = re.compile(r"/sockjs/[^/.]+/[^/.]+/websocket/?$")


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


class DDPClient:
    """A blocking DDP client over a raw WebSocket or SockJS framing, for tests."""

    def __init__(self, url: str, *, sockjs: bool | None = None, timeout: float = 10.0,
                 auto_pong: bool = True, **options: Any) -> None:
        import websocket  # websocket-client

        self.sockjs = bool(_SOCKJS_URL.search(url)) if sockjs is None else sockjs
        self.ws = websocket.create_connection(url, timeout=timeout, **options)
        self.auto_pong = auto_pong
        self.session: str | None = None
        self._pending: list[str] = []
        self._next_id = 0
        self.collections: dict[str, dict[str, dict[str, Any]]] = {}
        if self.sockjs:
            opening = self._recv_frame()
            if opening != "o":
                raise AssertionError(f"expected SockJS open frame, got {opening!r}")

    # -- raw frames ---------------------------------------------------------------------

    def send_raw(self, text: str) -> None:
        self.ws.send(json.dumps([text]) if self.sockjs else text)

    def send(self, msg: dict[str, Any]) -> None:
        self.send_raw(json.dumps(msg))

    def recv_raw(self) -> str:
        """The next DDP message text (SockJS ``a`` frames are unpacked)."""
        while not self._pending:
            frame = self._recv_frame()
            if not self.sockjs:
                return frame
            if frame.startswith("a"):
                self._pending.extend(json.loads(frame[1:]))
            elif frame.startswith("c"):
                raise ConnectionError(f"SockJS close frame: {frame}")
        return self._pending.pop(0)

    def _recv_frame(self) -> str:
        import websocket

        opcode, data = self.ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
            raise ConnectionError(f"WebSocket closed by the server (code {code})")
        return data.decode("utf-8")

    def recv(self) -> dict[str, Any]:
        """The next DDP message, answering server pings unless ``auto_pong`` is off."""
        while True:
            msg = json.loads(self.recv_raw())
            if self.auto_pong and msg.get("msg") == "ping":
                self.send({"msg": "pong", **({"id": msg["id"]} if "id" in msg else {})})
                continue
            self._apply(msg)
            return msg

    def _apply(self, msg: dict[str, Any]) -> None:
        kind = msg.get("msg")
        if kind not in ("added", "changed", "removed"):
            return
        docs = self.collections.setdefault(msg["collection"], {})
        if kind == "added":
            docs[msg["id"]] = from_json_value(msg.get("fields", {}))
        elif kind == "changed":
            doc = docs[msg["id"]]
            doc.update(from_json_value(msg.get("fields", {})))
            for name in msg.get("cleared", []):
                doc.pop(name, None)
        else:
            del docs[msg["id"]]

    # -- DDP ----------------------------------------------------------------------------

    def connect(self, version: str = "1", support: Sequence[str] = ("1", "pre2", "pre1")) -> str:
        self.send({"msg": "connect", "version": version, "support": list(support)})
        reply = self.recv()
        if reply.get("msg") != "connected":
            raise AssertionError(f"connect failed: {reply}")
        self.session = reply["session"]
        return self.session

    def new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def call(self, method: str, *params: Any, random_seed: str | None = None) -> Any:
        """Call a method; returns its result or raises ``MeteorError``.  Data messages that
        arrive meanwhile update :attr:`collections`."""
        method_id = self.new_id()
        msg: dict[str, Any] = {"msg": "method", "method": method, "id": method_id,
                               "params": to_json_value(list(params))}
        if random_seed is not None:
            msg["randomSeed"] = random_seed
        self.send(msg)
        result: dict[str, Any] | None = None
        updated = False
        while result is None or not updated:
            reply = self.recv()
            if reply.get("msg") == "result" and reply.get("id") == method_id:
                result = reply
            elif reply.get("msg") == "updated" and method_id in reply.get("methods", []):
                updated = True
        if "error" in result:
            raise _meteor_error(result["error"])
        return from_json_value(result.get("result"))

    def subscribe(self, name: str, *params: Any) -> str:
        """Subscribe and wait for ``ready``; raises ``MeteorError`` on ``nosub``."""
        sub_id = self.new_id()
        self.send({"msg": "sub", "id": sub_id, "name": name, "params": to_json_value(list(params))})
        while True:
            reply = self.recv()
            if reply.get("msg") == "ready" and sub_id in reply.get("subs", []):
                return sub_id
            if reply.get("msg") == "nosub" and reply.get("id") == sub_id:
                raise _meteor_error(reply.get("error") or {})

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> DDPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _meteor_error(obj: dict[str, Any]) -> MeteorError:
    """A ``MeteorError`` rebuilt from its wire object, like Meteor's client does."""
    return MeteorError(obj.get("error"), obj.get("reason"), obj.get("details"))
