"""The embedded PostgreSQL leaves nothing running after any test run: green, interrupted by a
signal (whatever the inherited disposition) or killed; a stale pid of a dead process never stops
the next start, nor keeps the server running (ddpctl.embedded, conftest.py)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, eventually

pytest.importorskip("pgserver", reason="the embedded PostgreSQL is not installed (ddpctl[embedded])")
import psutil  # comes with pgserver

INNER = '''
import json, os, time
from pathlib import Path

from django.db import connection


def test_holds_the_database(django_db_blocker):
    with django_db_blocker.unblock(), connection.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    # The bookstore's settings, imported by the test settings, did not start the example's server.
    holders = Path(os.environ["EXAMPLE_PGDATA"]) / ".handle_pids.json"
    assert not holders.exists() or os.getpid() not in json.loads(holders.read_text())
    Path(os.environ["READY_FILE"]).write_text(str(os.getpid()))
    if os.environ.get("INNER_SLEEP"):
        time.sleep(120)
'''


@pytest.fixture(scope="module")
def data_dir():
    # Not under pytest's temp root: every pytest session of the user resets that to mode 0700,
    # which PostgreSQL (run as the user "pgserver" when the tests run as root) cannot enter.
    parent = Path(tempfile.mkdtemp(prefix="ddpctl-embedded-test-"))
    yield parent / "pgdata"
    eventually(lambda: not processes_of(parent / "pgdata"), timeout=20)
    shutil.rmtree(parent)


def processes_of(data_dir: Path) -> list[str]:
    """Command lines of live processes naming ``data_dir`` (its postgres and its watchdog)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if process.info["status"] != psutil.STATUS_ZOMBIE and any(str(data_dir) in part for part in cmdline):
            found.append(" ".join(cmdline))
    return found


def inner_pytest(tmp_path: Path, data_dir: Path, *, sleep: bool, preexec_fn=None) -> subprocess.Popen:
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(textwrap.dedent(INNER))
    env = {key: value for key, value in os.environ.items()
           if key not in ("DATABASE_URL", "DDPCTL_TEST_DATABASE_URL")}
    env.update(DDPCTL_TEST_PGDATA=str(data_dir), READY_FILE=str(tmp_path / "ready"),
               EXAMPLE_PGDATA=str(ROOT / "examples" / "bookstore" / ".pgdata"),
               PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT / "examples" / "bookstore")]),
               INNER_SLEEP="1" if sleep else "")
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "setup.cfg"), "--rootdir", str(ROOT),
         "-p", "conftest", "-p", "no:cacheprovider", "-q", str(test_file)],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=preexec_fn)


def assert_green_run_leaves_nothing(tmp_path: Path, data_dir: Path) -> None:
    process = inner_pytest(tmp_path, data_dir, sleep=False)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert "1 passed" in output
    eventually(lambda: not processes_of(data_dir), timeout=20)
    assert not (data_dir / "postmaster.pid").exists()


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("signum, preexec_fn", [
    # SIGINT as under `cmd &` in a script: inherited ignored, which Python then keeps.
    (signal.SIGINT, ignore_sigint),
    (signal.SIGTERM, None),  # kills without atexit by default
    (signal.SIGKILL, None),  # nothing runs: the watchdog stops the server
], ids=["SIGINT-inherited-ignored", "SIGTERM", "SIGKILL"])
def test_interrupted_run_leaves_nothing_running(tmp_path, data_dir, signum, preexec_fn):
    process = inner_pytest(tmp_path, data_dir, sleep=True, preexec_fn=preexec_fn)
    try:
        eventually(lambda: (tmp_path / "ready").exists() or process.poll() is not None, timeout=90)
        assert process.poll() is None, process.communicate()[0]
        assert processes_of(data_dir), "the inner run's server is not running"
        process.send_signal(signum)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if signum == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
    else:
        assert process.returncode == pytest.ExitCode.INTERRUPTED, output
        assert "KeyboardInterrupt" in output
    # SIGKILL: the watchdog notices the dead holder within a second or so.
    eventually(lambda: not processes_of(data_dir), timeout=20)
    assert not (data_dir / "postmaster.pid").exists()
    assert json.loads((data_dir / ".handle_pids.json").read_text()) == []
    assert_green_run_leaves_nothing(tmp_path, data_dir)  # the next start works; a green run stops it


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_stale_pids_neither_block_the_start_nor_keep_the_server(tmp_path, data_dir):
    if not (data_dir / "PG_VERSION").exists():
        assert_green_run_leaves_nothing(tmp_path, data_dir)  # initialised and stopped
    # A postmaster.pid as a killed PostgreSQL leaves it, once its pid went to another process
    # (PostgreSQL itself refuses to start then), and a holder that was killed.
    pid = os.getpid()
    (data_dir / "postmaster.pid").write_text(
        f"{pid}\n{data_dir}\n1700000000\n5432\n{data_dir}\n\n  5432001  0\nready\n")
    (data_dir / ".handle_pids.json").write_text(json.dumps([dead_pid()]))
    assert_green_run_leaves_nothing(tmp_path, data_dir)


@pytest.fixture
def without_pgserver(tmp_path):
    """A PYTHONPATH on which ``import pgserver`` fails, as in an install without the extra."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "pgserver.py").write_text("raise ImportError(\"No module named 'pgserver'\")\n")
    env = {key: value for key, value in os.environ.items()
           if key not in ("DATABASE_URL", "DDPCTL_TEST_DATABASE_URL")}
    env.update(PYTHONPATH=str(shadow), DJANGO_SETTINGS_MODULE="bookstore.settings")
    return env


@pytest.mark.parametrize("command", [
    ["-m", "ddpctl", "migrate", "--settings", "bookstore.settings"],
    ["-m", "ddpctl", "serve", "--settings", "bookstore.settings", "-l", "127.0.0.1:0", "--no-reload"],
    ["-m", "ddpctl", "dbshell", "--settings", "bookstore.settings"],
    ["manage.py", "migrate"],
    ["manage.py", "check"],
], ids=lambda c: " ".join(c[:4]))
def test_without_the_embedded_extra_or_database_url_a_clear_error(without_pgserver, command):
    result = subprocess.run([sys.executable, *command], cwd=ROOT / "examples" / "bookstore",
                            env=without_pgserver, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert "pip install 'ddpctl[embedded]'" in result.stderr
    assert "DATABASE_URL" in result.stderr
    if command[0] == "manage.py":
        assert "ddpctl.E040" in result.stderr
        assert "WARNINGS" not in result.stderr  # nothing else tries to reach that database
    else:
        assert result.stderr.startswith("Error: no DATABASE_URL is set"), result.stderr
