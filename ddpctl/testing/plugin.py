"""ddpctl's pytest plugin (registered with the ``pytest11`` entry point: installing ddpctl
enables it).  Fixtures, on top of pytest-django's test database:

``ddp_server`` (session)
    a live ``ddpctl serve`` subprocess on a free port, using the test database
    (:mod:`.server_database`), stopped at the end of the session.  A test that uses it
    gets pytest-django's ``transactional_db``: what the test writes is committed, so the
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


@pytest.fixture(scope="session")
def ddp_server_args() -> list[str]:
    """Extra ``ddpctl serve`` arguments for :func:`ddp_server` (none by default)."""
    return []


@pytest.fixture(scope="session")
def ddp_server(django_db_setup: None, django_db_blocker: Any, ddp_server_args: list[str],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``ddpctl serve`` on a free port and the test database, for the whole session."""
    from .live_server import LiveServer
    from .server_database import server_settings

    settings_module = os.environ.get("DJANGO_SETTINGS_MODULE")
    if not settings_module:
        raise pytest.UsageError("ddp_server needs a Django settings module: set DJANGO_SETTINGS_MODULE "
                                "(pytest-django's --ds option or its ini setting)")
    with django_db_blocker.unblock():
        args, env = server_settings(tmp_path_factory.mktemp("ddp_server"), settings_module)
    with LiveServer([*args, *ddp_server_args], env=env) as server:
        yield server


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses ``ddp_server`` without a ``django_db`` mark is marked
    ``django_db(transaction=True)``, so pytest-django sets up the test database before the
    server starts (it reads the marks) and orders the test with the transactional ones."""
    for item in items:
        if "ddp_server" in getattr(item, "fixturenames", ()) and item.get_closest_marker("django_db") is None:
            item.add_marker(pytest.mark.django_db(transaction=True))


@pytest.fixture(autouse=True)
def _ddp_server_commits(request: pytest.FixtureRequest) -> None:
    """A test that uses ``ddp_server`` gets ``transactional_db`` even under a plain
    ``django_db`` mark: its writes are committed, so the server sees them (as pytest-django
    does for ``live_server``)."""
    if "ddp_server" in request.fixturenames:
        request.getfixturevalue("transactional_db")


@pytest.fixture
def ddp_client(ddp_server: LiveServer) -> Iterator[DDPClient]:
    """A :class:`~ddpctl.testing.DDPClient` connected to :func:`ddp_server`."""
    from .client import DDPClient

    with DDPClient(ddp_server.ws_url) as client:
        client.connect()
        yield client


@pytest.fixture
def ddp_communicator(db: None) -> Iterator[DDPCommunicator]:
    """A connected :class:`~ddpctl.testing.DDPCommunicator` (logged out; ``.login(user)``)."""
    from .communicator import DDPCommunicator

    with DDPCommunicator() as communicator:
        yield communicator
