"""Issue 15 (items 8): every long-running command stops on SIGINT and SIGTERM whatever it
inherited, and the log has one timestamp format and offset throughout (text or JSON lines)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import PYTHONPATH_ARGS, SERVER_ARGS, eventually
from hypothesis import given
from hypothesis import strategies as st

from ddpctl.log import JSONFormatter, TextFormatter
from ddpctl.testing import DDPClient, free_port

ISO_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"
TEXT_LINE = re.compile(rf"^({ISO_TIME}) (CRITICAL|ERROR|WARNING|INFO|DEBUG)\s+[\w.]+: ")


def _ignore_sigint() -> None:
    """In the child before exec: what a shell script's background job inherits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start(args: list[str], env: dict[str, str], stdout=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ddpctl", *args], env={**os.environ, **env},
                            stdout=stdout, stderr=subprocess.PIPE, text=True, preexec_fn=_ignore_sigint)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _caught(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (``SigCgt`` in /proc)."""
    with open(f"/proc/{pid}/status") as status:
        mask = next(line.split()[1] for line in status if line.startswith("SigCgt:"))
    return bool(int(mask, 16) >> (signum - 1) & 1)


def _stop(process: subprocess.Popen, signum: int) -> tuple[int, str]:
    """Send ``signum``; the exit code and stderr (the process is killed if it does not exit)."""
    process.send_signal(signum)
    try:
        _, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"still running 20 s after {signal.Signals(signum).name}:\n{err}")
    return process.returncode, err


@contextlib.contextmanager
def _running(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """``process``, killed on the way out if it is still running (a failed test leaves none)."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _serve(live_database_url: str, *args: str, settings: str = "test_settings",
           env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = _start(["serve", "--listen", f"127.0.0.1:{port}", "--settings", settings, *PYTHONPATH_ARGS,
                      *args], {"DATABASE_URL": live_database_url, **(env or {})})
    try:
        eventually(lambda: process.poll() is not None or _listening(port), timeout=60)
    except BaseException:
        with _running(process):
            raise
    if process.poll() is not None:
        pytest.fail(f"ddpctl serve exited with {process.returncode}:\n{process.stderr.read()}")
    return process, port


def _tail_listening(sql) -> None:
    eventually(lambda: sql("SELECT 1 FROM pg_stat_activity WHERE application_name = 'ddpctl-tail' "
                           "AND datname = current_database()", fetch=True), timeout=60)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_tail_stops_with_sigint_ignored_at_start(live_database_url, sql, signum):
    with _running(_start(["tail", *SERVER_ARGS], {"DATABASE_URL": live_database_url})) as process:
        _tail_listening(sql)
        assert _caught(process.pid, signal.SIGINT)
        code, err = _stop(process, signum)
    assert code == 0, err
    assert "Traceback" not in err


def test_tail_stops_when_started_by_a_script_in_the_background(live_database_url, sql):
    """The issue's case: ``ddpctl tail &`` in a non-interactive shell, then SIGINT."""
    script = (f"trap '' INT; exec {sys.executable} -m ddpctl tail "
              + " ".join(f"'{arg}'" for arg in SERVER_ARGS))
    shell = subprocess.Popen(["bash", "-c", script], env={**os.environ, "DATABASE_URL": live_database_url},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with _running(shell) as process:
        _tail_listening(sql)
        code, err = _stop(process, signal.SIGINT)
    assert code == 0, err


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_stops_gracefully_on_sigint_ignored_at_start(live_database_url, workers):
    process, port = _serve(live_database_url, "--workers", str(workers))
    with _running(process), DDPClient(f"ws://127.0.0.1:{port}/websocket") as client:
        client.connect()
        code, err = _stop(process, signal.SIGINT)
    assert code == 0, err
    assert "shutting down (SIGINT)" in err or "stopping 2 worker(s) (SIGINT)" in err, err


def _alive_children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (zombies left out)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[1]) == pid:
                found.add(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_stop_when_the_supervisor_is_killed(live_database_url):
    """``kill -9`` of ``serve --workers 2`` leaves no worker serving on."""
    process, port = _serve(live_database_url, "--workers", "2")
    with _running(process):
        workers = eventually(lambda: (lambda found: found if len(found) == 2 else None)(
            _alive_children(process.pid)))
        process.kill()
        process.communicate()
        try:
            eventually(lambda: not any(map(_alive, workers)), timeout=30)
        finally:
            for worker in filter(_alive, workers):  # (a failed test leaves none behind)
                os.kill(worker, signal.SIGKILL)
    assert not _listening(port)


def test_serve_stops_on_sigint_during_start_up(live_database_url):
    """Before the server's own handlers are in place (Django loading), SIGINT still ends it."""
    port = free_port()
    with _running(_start(["serve", "--listen", f"127.0.0.1:{port}", *SERVER_ARGS],
                         {"DATABASE_URL": live_database_url})) as process:
        # as soon as SIGINT is caught (a signal that arrives while still ignored is lost)
        eventually(lambda: process.poll() is not None or _caught(process.pid, signal.SIGINT), interval=0.01)
        code, _ = _stop(process, signal.SIGINT)
    assert code != 0 or not _listening(port)


def _log_of_a_crash(live_database_url: str, *args: str, **options: Any) -> str:
    """The stderr of ``ddpctl serve ARGS`` through a method that crashes and a SIGTERM."""
    process, port = _serve(live_database_url, *args, **options)
    with _running(process):
        with DDPClient(f"ws://127.0.0.1:{port}/websocket") as client:
            client.connect()
            with pytest.raises(Exception, match="Internal server error"):
                client.call("crash")
        code, err = _stop(process, signal.SIGTERM)
    assert code == 0, err
    return err


def test_serve_log_keeps_one_offset_whatever_time_zone(live_database_url):
    """TZ at start is UTC+05:30, Django's TIME_ZONE UTC+14: every line keeps +05:30."""
    err = _log_of_a_crash(live_database_url, "--log-level", "debug", settings="settings_log_time",
                          env={"TZ": "Asia/Kolkata"})
    stamps = [m.group(1) for m in map(TEXT_LINE.match, err.splitlines()) if m]
    assert len(stamps) >= 5, err
    assert {stamp[-6:] for stamp in stamps} == {"+05:30"}, err
    # and every line that looks like a log line is one (no second format creeping in)
    dated = [line for line in err.splitlines() if re.match(r"^\d{4}-\d\d-\d\d", line)]
    assert len(dated) == len(stamps), err


def test_serve_json_log_parses_line_by_line(live_database_url):
    err = _log_of_a_crash(live_database_url, "--log-format", "json", env={"TZ": "UTC"})
    records = [json.loads(line) for line in err.splitlines()]  # every line: one JSON object
    assert len(records) >= 5
    assert all(set(r) == {"time", "level", "logger", "message", "exception"} for r in records)
    assert all(re.fullmatch(ISO_TIME, r["time"]) and r["time"].endswith("+00:00") for r in records)
    crash = [r for r in records if r["exception"]]
    assert crash and "ZeroDivisionError: deliberate failure" in crash[0]["exception"]
    assert crash[0]["level"] == "ERROR" and "method 'crash'" in crash[0]["message"]
    assert any(r["message"] == "stopped" for r in records)


def test_log_format_from_environment_is_checked(ddpctl):
    result = subprocess.run([sys.executable, "-m", "ddpctl", "nodes", "ls", *SERVER_ARGS],
                            env={**os.environ, "DDPCTL_LOG_FORMAT": "yaml"}, capture_output=True, text=True)
    assert result.returncode == 2
    assert "DDPCTL_LOG_FORMAT='yaml' is not one of: text, json" in result.stderr


def _record(message: str, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("ddpctl.test", logging.WARNING, __file__, 1, "%s", (message,), exc_info)


@given(st.text(), st.booleans())
def test_json_formatter_writes_one_line_that_round_trips(message, with_exception):
    exc = None
    if with_exception:
        try:
            raise ValueError(message)
        except ValueError as caught:
            exc = caught
    line = JSONFormatter().format(_record(message, exc))
    assert "\n" not in line and "\r" not in line
    record = json.loads(line)
    assert record["message"] == message and record["logger"] == "ddpctl.test"
    assert record["level"] == "WARNING"
    assert (record["exception"] is not None) == with_exception
    if with_exception:
        assert record["exception"].startswith("Traceback") and "ValueError" in record["exception"]


def test_formatter_zone_is_fixed_when_made(monkeypatch):
    """Changing TZ and calling tzset (what Django's settings do) changes nothing afterwards."""
    if not hasattr(time, "tzset"):
        pytest.skip("no time.tzset")
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        formatter = TextFormatter()
        first = formatter.format(_record("before"))
        monkeypatch.setenv("TZ", "Pacific/Kiritimati")
        time.tzset()
        second = formatter.format(_record("after"))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert TEXT_LINE.match(first).group(1).endswith("+05:30")
    assert TEXT_LINE.match(second).group(1).endswith("+05:30")
