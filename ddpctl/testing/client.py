"""A blocking DDP client over a raw WebSocket or SockJS framing, for tests of a live server.

``DDPClient`` needs the ``websocket-client`` package (``pip install ddpctl[test]``).
"""
from __future__ import annotations

import json
import re
from typing import Any

from .client_session import ClientSession, Message

__all__ = ["DDPClient"]

_SOCKJS_URL = re.compile(r"/sockjs/[^/.]+/[^/.]+/websocket/?$")


class DDPClient(ClientSession):
    """A blocking DDP client over a raw WebSocket or SockJS framing, for tests.

    ``timeout``: seconds a socket read waits (:meth:`recv` raises websocket-client's
    timeout exception after it) and a ``wait_for...`` waits (then :class:`WaitTimeout`).
    ``options`` go to ``websocket.create_connection`` (``header=[...]``, ``origin=...``).
    """

    def __init__(self, url: str, *, sockjs: bool | None = None, timeout: float = 10.0,
                 auto_pong: bool = True, history: int | None = 10_000, **options: Any) -> None:
        try:
            import websocket  # websocket-client
        except ImportError as exc:
            raise ImportError("ddpctl.testing.DDPClient needs the websocket-client package: "
                              "pip install 'ddpctl[test]'") from exc

        super().__init__(timeout=timeout, history=history)
        self.url = url
        self.sockjs = bool(_SOCKJS_URL.search(url)) if sockjs is None else sockjs
        self.ws = websocket.create_connection(url, timeout=timeout, **options)
        self.auto_pong = auto_pong
        self._pending: list[str] = []
        if self.sockjs:
            opening = self._recv_frame()
            if opening != "o":
                raise AssertionError(f"expected SockJS open frame, got {opening!r}")

    # -- raw frames ---------------------------------------------------------------------

    def send_raw(self, text: str) -> None:
        self.ws.send(json.dumps([text]) if self.sockjs else text)

    def send(self, msg: Message) -> None:
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

    def recv(self) -> Message:
        """The next DDP message, answering server pings unless ``auto_pong`` is off.
        Raises websocket-client's exceptions (a timeout after the socket's timeout)."""
        while True:
            msg = json.loads(self.recv_raw())
            if self.auto_pong and msg.get("msg") == "ping":
                self.send({"msg": "pong", **({"id": msg["id"]} if "id" in msg else {})})
                continue
            self._record(msg)
            return msg

    def _receive_within(self, seconds: float) -> Message | None:
        import websocket

        if self._pending:
            return self.recv()
        previous = self.ws.gettimeout()
        self.ws.settimeout(max(seconds, 0.001))
        try:
            return self.recv()
        except websocket.WebSocketTimeoutException:
            return None
        finally:
            self.ws.settimeout(previous)

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> DDPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
