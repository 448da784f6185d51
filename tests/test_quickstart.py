"""The README's quick start as a new user runs it: ``ddpctl dbshell``, the bookstore's sample
data (twice), and the INSERT the README shows reaching a subscriber at once."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
from conftest import PYTHONPATH_ARGS, ROOT, wait_for

from ddpctl.testing import DDPClient

BOOKSTORE = ROOT / "examples" / "bookstore"


def dbshell(url: str, *psql_args: str, env: dict[str, str] | None = None,
            options=()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ddpctl", "dbshell", "--settings", "test_settings", *PYTHONPATH_ARGS,
         *options, "--", *psql_args],
        env={**os.environ, "DATABASE_URL": url, **(env or {})}, capture_output=True, text=True, timeout=60)


def readme_insert() -> str:
    """The INSERT of the README's quick start (a literal block line, possibly continued)."""
    text = (ROOT / "README.rst").read_text()
    quick_start = text.split("Quick start\n===========\n")[1].split("\n====")[0]
    match = re.search(r"^ +(INSERT INTO bookstore_book .*?;)$", quick_start, re.M | re.S)
    assert match, "the README's quick start shows no INSERT INTO bookstore_book"
    return " ".join(line.strip() for line in match.group(1).splitlines())


def test_dbshell_runs_psql_on_the_configured_database(live_database_url):
    result = dbshell(live_database_url, "-At", "-c", "SELECT current_database(), current_user")
    assert result.returncode == 0, result.stderr
    name = urlsplit(live_database_url).path.lstrip("/")  # the URL may name a socket directory
    assert result.stdout.strip().split("|")[0] == name


def test_dbshell_exit_status_is_psql_s(live_database_url):
    result = dbshell(live_database_url, "-v", "ON_ERROR_STOP=1", "-c", "SELECT no_such_column")
    assert result.returncode == 1
    assert 'column "no_such_column" does not exist' in result.stderr


def test_dbshell_unknown_database_alias(live_database_url):
    result = dbshell(live_database_url, options=["--database", "reports"])
    assert result.returncode == 2
    assert "no database 'reports' in DATABASES" in result.stderr and "Traceback" not in result.stderr


def test_dbshell_without_psql_on_path_uses_the_embedded_one(live_database_url):
    pytest.importorskip("pgserver")
    result = dbshell(live_database_url, "-At", "-c", "SELECT 41 + 1", env={"PATH": "/nonexistent"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "42"


def test_dbshell_without_any_psql_says_what_to_install(live_database_url, tmp_path):
    shadow = tmp_path / "shadow"  # pgserver not installed either
    shadow.mkdir()
    (shadow / "pgserver.py").write_text("raise ImportError(\"No module named 'pgserver'\")\n")
    result = dbshell(live_database_url, "-c", "SELECT 1",
                     env={"PATH": "/nonexistent", "PYTHONPATH": str(shadow)})
    assert result.returncode == 1
    assert result.stderr.startswith("Error: psql is not installed"), result.stderr
    assert "postgresql-client" in result.stderr and "ddpctl[embedded]" in result.stderr


def manage(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "bookstore.settings"}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BOOKSTORE, capture_output=True, text=True,
                          env=env, timeout=120)


def test_sample_data_then_the_readme_insert_reaches_a_subscriber(server, clean, sql, live_database_url):
    first = manage(live_database_url, "sampledata")
    assert first.returncode == 0, first.stderr
    assert "added 3 author(s), 3 genre(s) and 6 book(s); 0 were already there" in first.stdout
    books = sql("SELECT title, pages, published, blurb <> '' FROM bookstore_book ORDER BY title", fetch=True)
    assert len(books) == 6 and all(pages > 0 and published and blurb for _, pages, published, blurb in books)
    assert sql("SELECT count(*) FROM bookstore_book_genres", fetch=True) == [(8,)]
    # Again, after a user changed a sample book: nothing added, nothing overwritten.
    sql("UPDATE bookstore_book SET pages = 1 WHERE title = 'Dune'")
    second = manage(live_database_url, "sampledata")
    assert second.returncode == 0, second.stderr
    assert "added 0 author(s), 0 genre(s) and 0 book(s); 12 were already there" in second.stdout
    dune = "SELECT count(*), sum(pages) FILTER (WHERE title = 'Dune') FROM bookstore_book"
    assert sql(dune, fetch=True) == [(6, 1)]

    insert = readme_insert()
    with DDPClient(server.ws_url) as client:
        client.connect()
        client.subscribe("AllBooks")
        result = dbshell(live_database_url, "-v", "ON_ERROR_STOP=1", "-c", insert)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "INSERT 0 1"
        title = re.search(r"'([^']+)'", insert).group(1)
        wait_for(client, lambda c: any(book["title"] == title
                                       for book in c.collections.get("bookstore.book", {}).values()))
