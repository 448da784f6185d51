"""Run publications and methods in the test's own process, without a server or sockets.

Modelled on Channels' ``WebsocketCommunicator``::

    @pytest.mark.django_db
    def test_my_books(django_user_model):
        alice = django_user_model.objects.create_user("alice")
        with DDPCommunicator(user=alice) as comm:
            comm.subscribe("MyBooks")
            book = Book.objects.create(title="Dune", owner=alice)
            comm.wait_for_collection("my_books", {str(book.pk): {...}})

A communicator is a :class:`ddpctl.server.connection.DDPConnection` -- the server's own
session, mergebox, publication, observer and method code -- served in this process by
:mod:`ddpctl.server.in_process`, on the test's database connection: inside pytest-django's
``db`` transaction, publications and methods see the test's uncommitted writes, and
changes the test makes reach subscriptions when the communicator reads the changelog:
at once in :meth:`DDPCommunicator.flush`, and every ``poll_interval`` seconds while a
``wait_for...`` waits (also after a method, whose ``updated`` follows its data as on a
server).  It records every message (``messages``, ``collections``; see
:class:`~.client_session.ClientSession`).

Communicators open at the same time share one in-process server, so their subscriptions
share observers as on a real server.  Heartbeats are not sent (nothing ticks).
"""
from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .client_session import ClientSession, Message, WaitTimeout

if TYPE_CHECKING:
    from ..invocation import ConnectionHandle
    from ..server.in_process import InProcessConnection, InProcessServer

__all__ = ["DDPCommunicator"]

_shared: InProcessServer | None = None  # the server of the communicators open now
_open = 0


def _acquire_server() -> InProcessServer:
    global _shared, _open
    if _shared is None:
        from ..server.in_process import InProcessServer

        server = InProcessServer()
        server.dispatcher.start()  # the changelog position: changes from now on reach it
        _shared = server
    _open += 1
    return _shared


def _release_server() -> None:
    global _shared, _open
    _open -= 1
    if _open <= 0:
        _shared, _open = None, 0


class DDPCommunicator(ClientSession):
    """A DDP client of an in-process connection (module docstring).

    ``user``: a Django user (or its primary key) the connection is logged in as from the
    start (``None``: logged out; see :meth:`login`).  ``headers``: the HTTP headers of the
    upgrade request (lower-case names), as hooks and ``connection.http_headers`` see
    them.  ``client_address``: the client's IP address.  ``timeout``: seconds a
    ``wait_for...`` waits by default.  ``poll_interval``: seconds between reads of the
    changelog while waiting.

    Used as a context manager it connects on entry and disconnects on exit; else call
    :meth:`open` (and :meth:`connect`) and :meth:`close`.  Needs database access (a
    ``django_db`` test) from :meth:`open` to :meth:`close`.
    """

    def __init__(self, user: Any = None, *, headers: Mapping[str, str] | None = None,
                 client_address: str = "127.0.0.1", timeout: float = 10.0,
                 poll_interval: float = 0.05, history: int | None = 10_000) -> None:
        super().__init__(timeout=timeout, history=history)
        self.user_id = _user_id(user)
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.client_address = client_address
        self.poll_interval = poll_interval
        self._server: InProcessServer | None = None
        self._connection: InProcessConnection | None = None
        self._pending: deque[str] = deque()

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> DDPCommunicator:
        """Open the in-process connection (no DDP message yet: :meth:`connect` sends ``connect``)."""
        if self._connection is not None:
            return self
        from ..server.in_process import InProcessConnection

        environ = {"REMOTE_ADDR": self.client_address,
                   **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in self.headers.items()}}
        self._server = _acquire_server()
        try:
            self._connection = InProcessConnection(self._server, self._pending.append, environ=environ,
                                                   user_id=self.user_id)
        except BaseException:
            self._server = None
            _release_server()
            raise
        return self

    def close(self) -> None:
        """End the connection as a client leaving would: subscriptions stopped, ``on_close``
        callbacks run.  Messages sent before the end are still recorded."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.close()
            self._drain()
        finally:
            self._server = None
            _release_server()

    def __enter__(self) -> DDPCommunicator:
        self.open()
        if self.session is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once the connection ended (closed by :meth:`close`, the server or a method)."""
        return self._connection is None or self._connection.closed

    @property
    def handle(self) -> ConnectionHandle:
        """The connection as methods and hooks see it (``current_invocation().connection``):
        its ``id``, ``http_headers``, ``data``."""
        return self._live().connection.handle

    # -- the DDP stream -------------------------------------------------------------------

    def send(self, msg: Message) -> None:
        self.send_raw(json.dumps(msg))

    def send_raw(self, text: str | bytes) -> None:
        """Hand the connection a frame, as if the client sent it, and let it work."""
        connection = self._live()
        connection.receive(text)
        connection.run_until_idle(self.timeout)

    def recv(self, timeout: float | None = None) -> Message:
        """The next message; ``WaitTimeout`` if none comes within ``timeout`` seconds
        (default :attr:`timeout`; changes are read from the changelog meanwhile)."""
        timeout = self.timeout if timeout is None else timeout
        msg = self._receive_within(timeout)
        if msg is None:
            raise WaitTimeout(self.report("a message", timeout))
        return msg

    def flush(self) -> list[Message]:
        """Read the changelog now and let the observers send what changed; the messages
        that came (also recorded).  After a write by the test, this makes it visible."""
        before = self._received
        self._pump()
        self._drain()
        return [msg for _, msg in self._since(before)]

    def _receive_within(self, seconds: float) -> Message | None:
        deadline = time.monotonic() + seconds
        while not self._pending:
            if self._connection is None:
                return None
            self._pump()
            if self._pending or time.monotonic() >= deadline:
                break
            time.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))
        if not self._pending:
            return None
        msg = json.loads(self._pending.popleft())
        self._record(msg)
        return msg

    def _pump(self) -> None:
        """Let the connection work, read the changelog, let it work again."""
        connection = self._live()
        connection.run_until_idle(self.timeout)
        assert self._server is not None
        self._server.dispatcher.poll()
        connection.run_until_idle(self.timeout)

    def _drain(self) -> None:
        """Record every message written and not yet read (so ``collections`` is current)."""
        while self._pending:
            self._record(json.loads(self._pending.popleft()))

    def _live(self) -> InProcessConnection:
        if self._connection is None:
            raise RuntimeError("the communicator is not open (use it as a context manager, or call open())")
        return self._connection

    # -- the user ------------------------------------------------------------------------

    def login(self, user: Any) -> None:
        """Log the connection in as ``user`` (a Django user or its primary key) as a login
        method would (``setUserId``): every subscription runs again as that user and the
        client gets the differences."""
        self.user_id = _user_id(user)
        connection = self._live()
        connection.change_user(self.user_id)
        connection.run_until_idle(self.timeout)

    def logout(self) -> None:
        """Log the connection out (subscriptions run again, logged out)."""
        self.login(None)


def _user_id(user: Any) -> Any:
    return getattr(user, "pk", user)
