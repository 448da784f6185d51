"""ddpctl's pytest plugin (registered with the ``pytest11`` entry point: installing ddpctl
enables it).  Fixtures, on top of pytest-django's test database:

``ddp_server`` (session)
    a live ``ddpctl serve`` subprocess on a free port, using the test database
    (:mod:`.server_database`), stopped at the end of the session.  A test that uses it
    is marked ``django_db(transaction=True)``: what the test writes is committed, so the
    server sees it, and the tables are emptied after the test.
``ddp_client``
    a :class:`~ddpctl.testing.DDPClient` connected (DDP ``connect`` done) to ``ddp_server``.
``ddp_communicator``
    a connected :class:`~ddpctl.testing.DDPCommunicator`: the server's connection code
    run in the test's process on its database connection, no server (needs ``db``,
    requested for you).
``ddp_server_args`` (session)
    extra ``ddpctl serve`` arguments for ``ddp_server`` (override it in a conftest.py:
    ``return ["--max-subscriptions", "10"]``); empty by default.

A failed test that used ``ddp_server`` gets a ``Captured ddpctl serve log`` section:
what the server logged during the test.

The server's settings module is ``DJANGO_SETTINGS_MODULE`` (pytest-django's ``--ds`` or
``DJANGO_SETTINGS_MODULE`` ini option) with ``DATABASES`` replaced by the test database's.
See docs/testing.rst.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .client import DDPClient
    from .communicator import DDPCommunicator
    from .live_server import LiveServer

# The time zone the test run started in, before Django's settings set TZ to TIME_ZONE: the
# server logs in it, as a `ddpctl serve` started from the same shell would (":/etc/localtime"
# is the system's zone for a TZ that was not set).
_STARTING_TZ = os.environ.get("TZ", ":/etc/localtime" if os.path.exists("/etc/localtime") else None)


@pytest.fixture(scope="session")
def ddp_server_args() -> list[str]:
    """Extra ``ddpctl serve`` arguments for :func:`ddp_server` (none by default)."""
    return []


@pytest.fixture(scope="session")
def ddp_server(django_db_setup: None, django_db_blocker: Any, ddp_server_args: list[str],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``ddpctl serve`` on a free port and the test database, for the whole session (a
    :class:`~ddpctl.testing.LiveServer`: ``ws_url``, ``sockjs_url``, ``output()``).  Tests
    that use it run as ``django_db(transaction=True)``: their writes are committed, so the
    server sees them.  Its options: the ``ddp_server_args`` fixture."""
    from .live_server import LiveServer
    from .server_database import server_settings

    settings_module = os.environ.get("DJANGO_SETTINGS_MODULE")
    if not settings_module:
        raise pytest.UsageError("ddp_server needs a Django settings module: set DJANGO_SETTINGS_MODULE "
                                "(pytest-django's --ds option or its ini setting)")
    with django_db_blocker.unblock():
        args, env = server_settings(tmp_path_factory.mktemp("ddp_server"), settings_module)
    if _STARTING_TZ is not None:
        env["TZ"] = _STARTING_TZ
    with LiveServer([*args, *ddp_server_args], env=env) as server:
        yield server


_SERVER_LOG = pytest.StashKey["tuple[LiveServer, int]"]()


@pytest.fixture(autouse=True)
def _ddp_server_log(request: pytest.FixtureRequest) -> None:
    """Where ``ddp_server``'s log stood when a test that uses it began (for its report)."""
    if "ddp_server" in request.fixturenames:
        server = request.getfixturevalue("ddp_server")
        request.node.stash[_SERVER_LOG] = (server, len(server.output()))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test that used ``ddp_server`` shows what the server logged meanwhile (a
    method's traceback, a warning) in a ``Captured ddpctl serve log`` section."""
    report = yield
    started = item.stash.get(_SERVER_LOG, None)
    if started is not None and report.failed and call.when == "call":
        server, offset = started
        logged = server.output()[offset:]
        if logged.strip():
            report.sections.append(("Captured ddpctl serve log", logged))
    return report


_DJANGO_DB_ARGS = ("transaction", "reset_sequences", "databases", "serialized_rollback", "available_apps")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses ``ddp_server`` is marked ``django_db(transaction=True)`` (its other
    ``django_db`` arguments kept): its writes are committed, so the server sees them, as
    pytest-django does for ``live_server``.  A mark, not a fixture, so that pytest-django
    sets up the test database before the server starts and orders the test with the
    transactional ones (it reads the marks of the tests collected)."""
    for item in items:
        if "ddp_server" not in getattr(item, "fixturenames", ()):
            continue
        marker = item.get_closest_marker("django_db")
        options: dict[str, Any] = {}
        if marker is not None:
            if marker.kwargs.get("transaction") or (marker.args and marker.args[0]):
                continue
            options = {**dict(zip(_DJANGO_DB_ARGS, marker.args, strict=False)), **marker.kwargs}
        item.add_marker(pytest.mark.django_db(**{**options, "transaction": True}), append=False)


@pytest.fixture
def ddp_client(ddp_server: LiveServer) -> Iterator[DDPClient]:
    """A :class:`~ddpctl.testing.DDPClient` connected to :func:`ddp_server`."""
    from .client import DDPClient

    with DDPClient(ddp_server.ws_url) as client:
        client.connect()
        yield client


@pytest.fixture
def ddp_communicator(db: None) -> Iterator[DDPCommunicator]:
    """A connected :class:`~ddpctl.testing.DDPCommunicator`: the server's connection code in
    the test's process, on its database connection (it sees the test's uncommitted writes;
    ``flush()`` or a ``wait_for...`` delivers their changes).  Logged out: ``.login(user)``."""
    from .communicator import DDPCommunicator

    with DDPCommunicator() as communicator:
        yield communicator
