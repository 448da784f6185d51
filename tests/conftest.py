"""Fixtures: a database for server processes, and live ``ddpctl serve`` processes."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import psycopg2
import pytest
from django.conf import settings

from ddpctl import embedded
from ddpctl.stop_signals import handle_stop_signals
from ddpctl.testing import DDPClient, LiveServer, eventually  # noqa: F401  (eventually: for the tests)

ROOT = Path(__file__).resolve().parent.parent
PYTHONPATH_ARGS = ["--pythonpath", str(ROOT / "examples" / "bookstore"), "--pythonpath", str(ROOT / "tests")]
SERVER_ARGS = ["--settings", "test_settings", *PYTHONPATH_ARGS]


def pytest_configure(config):
    # SIGINT, SIGTERM and SIGHUP interrupt the run the way Ctrl-C does, whatever the inherited
    # disposition: fixtures tear down (servers stop, databases are dropped), then the session ends.
    handle_stop_signals((signal.SIGINT, signal.SIGTERM, signal.SIGHUP))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    """Stop the embedded PostgreSQL this run started (unless another process still holds it);
    atexit and the embedded server's watchdog cover runs that end otherwise."""
    embedded.release_all()


def wait_for(client, predicate, timeout=10.0):
    """Read ``client``'s messages until ``predicate(client)`` holds; the messages read."""
    client.ws.settimeout(timeout)
    seen = []
    deadline = time.monotonic() + timeout
    while not predicate(client):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; collections={client.collections}, messages={seen[-10:]}")
        seen.append(client.recv())
    return seen


def _url(dbname: str) -> str:
    db = settings.DATABASES["default"]
    auth = quote(db["USER"] or "") + (":" + quote(db["PASSWORD"]) if db["PASSWORD"] else "")
    host = db["HOST"] or ""
    port = db["PORT"] or "5432"
    if host.startswith("/"):
        return f"postgresql://{auth}@:{port}/{dbname}?host={quote(host)}"
    return f"postgresql://{auth}@{host}:{port}/{dbname}"


@contextlib.contextmanager
def empty_database(prefix: str):
    """A fresh, empty database (``<prefix>_<pid>``); its URL, dropped after."""
    name = f"{prefix}_{os.getpid()}"
    admin = psycopg2.connect(_url("postgres"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    try:
        yield _url(name)
    finally:
        admin = psycopg2.connect(_url("postgres"))  # a new one: a test may have restarted PostgreSQL
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextlib.contextmanager
def migrated_database(prefix: str, server_args: list[str]):
    """A fresh database (``<prefix>_<pid>``) migrated by ``ddpctl migrate`` with
    ``server_args``; its URL, dropped after."""
    with empty_database(prefix) as url:
        subprocess.run([sys.executable, "-m", "ddpctl", "migrate", "--noinput", *server_args],
                       env={**os.environ, "DATABASE_URL": url}, check=True, capture_output=True)
        yield url


@pytest.fixture(scope="session")
def live_database_url(django_db_blocker):
    """A fresh, migrated database that server processes started by the tests share."""
    with migrated_database("ddpctl_it", SERVER_ARGS) as url:
        yield url


@pytest.fixture
def sql(live_database_url):
    """Run SQL on the live database in autocommit, like any other service would."""
    conn = psycopg2.connect(live_database_url)
    conn.autocommit = True

    def run(statement, params=None, fetch=False):
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if fetch else None

    yield run
    conn.close()


@pytest.fixture
def clean(sql):
    sql("TRUNCATE bookstore_book_genres, bookstore_book, bookstore_author, bookstore_genre, "
        "testapp_note RESTART IDENTITY CASCADE")


@pytest.fixture
def start_server(live_database_url):
    """Start ``ddpctl serve`` with extra arguments; every server is stopped after the test."""
    servers: list[LiveServer] = []

    def start(*args: str, env: dict[str, str] | None = None) -> LiveServer:
        server = LiveServer([*SERVER_ARGS, *args],
                            env={"DATABASE_URL": live_database_url, **(env or {})})
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def server(live_database_url):
    """One ``ddpctl serve`` with default options, shared by a test module."""
    with LiveServer(SERVER_ARGS, env={"DATABASE_URL": live_database_url}) as live:
        yield live


@pytest.fixture(params=["raw", "sockjs"])
def client_url(request, server):
    return server.ws_url if request.param == "raw" else server.sockjs_url


@pytest.fixture
def client(client_url):
    with DDPClient(client_url) as ddp:
        yield ddp


@pytest.fixture
def ddpctl(live_database_url):
    """Run a ddpctl command (``ddpctl("subs", "ls", "--json")``) against the live database."""

    def run(*args: str, check: bool = True, input: str | None = None, timeout: float = 60):
        result = subprocess.run([sys.executable, "-m", "ddpctl", *args, *SERVER_ARGS], input=input,
                                env={**os.environ, "DATABASE_URL": live_database_url}, capture_output=True,
                                text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"ddpctl {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    return run
