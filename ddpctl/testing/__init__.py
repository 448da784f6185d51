"""Helpers for testing a ddpctl project (docs/testing.rst).

* :class:`DDPCommunicator`: a publication or method run in the test's own process, on its
  database connection, through the server's own connection code, no sockets::

      with DDPCommunicator(user=alice) as comm:
          comm.subscribe("MyBooks")
          assert comm.call("books.add", "Dune", "frank@example.com") > 0

* :class:`LiveServer` (``ddpctl serve`` on a free port) and :class:`DDPClient` (a blocking
  WebSocket client)::

      with LiveServer(["--settings", "mysite.settings"]) as server:
          with DDPClient(server.ws_url) as client:
              client.connect()
              assert client.call("add", 1, 2) == 3

* pytest fixtures (:mod:`ddpctl.testing.plugin`, enabled by installing ddpctl):
  ``ddp_server``, ``ddp_client``, ``ddp_communicator``.

Both clients record what they receive and wait for it (``wait_for_collection``,
``wait_for_message``, ``wait_for_ready``, ``wait_for_result``: :class:`ClientSession`),
raising :class:`WaitTimeout` with what came instead.  ``DDPClient`` needs the
``websocket-client`` package (``pip install ddpctl[test]``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .client import DDPClient
from .client_session import ClientSession, WaitTimeout, eventually
from .live_server import LiveServer, ServerDidNotStart, free_port

if TYPE_CHECKING:
    from .communicator import DDPCommunicator

__all__ = ["ClientSession", "DDPClient", "DDPCommunicator", "LiveServer", "ServerDidNotStart", "WaitTimeout",
           "eventually", "free_port"]


def __getattr__(name: str) -> Any:
    # Imported on first use: it loads the server's connection code (gevent, Django models),
    # which must wait until Django is set up.
    if name == "DDPCommunicator":
        from .communicator import DDPCommunicator

        return DDPCommunicator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
