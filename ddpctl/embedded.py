"""The embedded PostgreSQL: a private server in a data directory, used when no ``DATABASE_URL``
is set (``pip install 'ddpctl[embedded]'``, which brings the ``pgserver`` package and its
PostgreSQL binaries).

Every process that uses the same data directory shares one server, listening only on a Unix
socket in that directory.  pgserver keeps the holders' pids in ``<data dir>/.handle_pids.json``;
the last holder to leave stops the server.  On top of pgserver, ddpctl:

* drops the pids of dead holders before it joins or leaves (a killed process used to stay in
  the list, so the server was never stopped again);
* removes a ``postmaster.pid`` whose process is gone or is not this directory's postmaster (a
  pid reused after a crash made pgserver report a server that was not running);
* starts a watchdog process (``python -m ddpctl.embedded watch DATA_DIR``, in its own session) with
  the server: once a second it drops dead holders, and when none is left it stops the server
  (``pg_ctl stop -m fast``) and exits.  A holder killed by SIGKILL thus stops the server too.

``python -m ddpctl.embedded run DATA_DIR COMMAND...`` runs a command with ``DATABASE_URL`` set to
the server of ``DATA_DIR`` (``scripts/test`` runs the suite so on a Python that pgserver has no
wheel for).

All of it happens under pgserver's inter-process lock, so processes may start, join and leave
concurrently.  Relies on pgserver 0.1's holder list and lock (``pgserver>=0.1.4,<0.2``).
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["EmbeddedUnavailable", "MISSING_MESSAGE", "bin_dir", "release",
           "release_all", "server_url"]

logger = logging.getLogger(__name__)

MISSING_MESSAGE = ("no DATABASE_URL is set and the embedded PostgreSQL is not installed: "
                   "install it with `pip install 'ddpctl[embedded]'`, or set DATABASE_URL "
                   "(postgres://user:password@host:5432/name)")
HOLDERS = ".handle_pids.json"  # pgserver's list of holder pids
WATCHDOG_PID = "ddpctl-watchdog.pid"
WATCH_INTERVAL = 1.0  # seconds between the watchdog's looks at the holders

_held: dict[Path, Any] = {}  # data dir -> pgserver.PostgresServer this process holds


class EmbeddedUnavailable(RuntimeError):
    """The embedded PostgreSQL is needed but ``pgserver`` is not installed."""

    def __init__(self, message: str = MISSING_MESSAGE) -> None:
        super().__init__(message)


def _pgserver() -> ModuleType:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); /tmp is fine.
        warnings.simplefilter("ignore")
        try:
            import pgserver
        except ImportError:
            raise EmbeddedUnavailable() from None
    return pgserver


def _lock() -> Any:
    """pgserver's inter-process lock (a file lock in the user's runtime directory)."""
    return _pgserver().PostgresServer._lock


def bin_dir() -> Path | None:
    """The directory of pgserver's PostgreSQL binaries (``psql``, ``pg_ctl``...), or None."""
    try:
        _pgserver()
    except EmbeddedUnavailable:
        return None
    from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _system_user() -> str | None:
    # pgserver runs PostgreSQL as the user "pgserver" when it runs as root (initdb refuses root).
    return "pgserver" if os.geteuid() == 0 else None


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _runs(pid: int, *words: str) -> bool:
    """Whether ``pid`` is a live process whose command line contains each of ``words``."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = process.cmdline()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # another user's process: assume it is what the file says
    return all(any(word in part for part in cmdline) for word in words)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _postmaster_pid(data_dir: Path) -> int | None:
    """The pid of ``data_dir``'s running postmaster; a stale ``postmaster.pid`` is removed."""
    pid_file = data_dir / "postmaster.pid"
    pid = _read_pid(pid_file)
    if pid is None:
        return None
    if _runs(pid, "postgres", str(data_dir)):
        return pid
    logger.warning("removing the stale %s (process %d is not its postmaster)", pid_file, pid)
    pid_file.unlink(missing_ok=True)
    return None


def _live_holders(data_dir: Path) -> list[int]:
    """The holders' pids, once dead ones are dropped from the list (call under the lock)."""
    path = data_dir / HOLDERS
    try:
        pids = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return []
    alive = [pid for pid in pids if _alive(pid)]
    if alive != pids:
        logger.info("dropping dead holders %s of the embedded PostgreSQL in %s",
                    sorted(set(pids) - set(alive)), data_dir)
        path.write_text(json.dumps(alive))
    return alive


def _stop(data_dir: Path) -> None:
    from pgserver._commands import pg_ctl

    logger.info("stopping the embedded PostgreSQL in %s", data_dir)
    pg_ctl(["-w", "stop", "-m", "fast"], pgdata=data_dir, user=_system_user())


def _ensure_watchdog(data_dir: Path) -> None:
    """Start the watchdog of ``data_dir`` unless one runs (call under the lock)."""
    pid_file = data_dir / WATCHDOG_PID
    pid = _read_pid(pid_file)
    if pid is not None and _runs(pid, "ddpctl.embedded", str(data_dir)):
        return
    # ddpctl may be importable here only through sys.path changes (--pythonpath, a checkout).
    package_root = str(Path(__file__).resolve().parent.parent)
    pythonpath = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    with open(data_dir / "watchdog.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ddpctl.embedded", "watch", str(data_dir)], start_new_session=True,
            env={**os.environ, "PYTHONPATH": pythonpath}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=log)
    pid_file.write_text(f"{process.pid}\n")


def server_url(data_dir: str | os.PathLike[str]) -> str:
    """Start (or join) the embedded PostgreSQL in ``data_dir``; its URL
    (``postgresql://postgres:@/postgres?host=<socket dir>``).

    This process holds the server until :func:`release` or its exit.  ``data_dir`` is created
    (``initdb``) on first use; its parent must be writable.  Raises :class:`EmbeddedUnavailable`
    without pgserver, ``subprocess.CalledProcessError`` when PostgreSQL fails to start (its log
    is ``<data_dir>/log``).
    """
    pgserver = _pgserver()
    path = Path(data_dir).expanduser().resolve()
    if path in _held:
        return _held[path].get_uri()
    path.mkdir(parents=True, exist_ok=True)
    with _lock():
        _live_holders(path)
        _postmaster_pid(path)
    logger.info("using the embedded PostgreSQL in %s", path)
    server = pgserver.get_server(path, cleanup_mode="stop")
    _held[path] = server
    atexit.register(release, path)  # runs before pgserver's own exit handler (registered earlier)
    with _lock():
        _ensure_watchdog(path)
    return server.get_uri()


def release(data_dir: str | os.PathLike[str]) -> None:
    """Stop holding the embedded PostgreSQL of ``data_dir``; stopped if no other live process
    holds it.  Does nothing if this process does not hold it."""
    path = Path(data_dir).expanduser().resolve()
    server = _held.pop(path, None)
    if server is None:
        return
    with _lock():
        _live_holders(path)
    server.cleanup()  # pgserver: leaves the list; stops the server if this was the last holder
    type(server)._instances.pop(path, None)  # a later server_url() joins afresh


def release_all() -> None:
    """:func:`release` every embedded PostgreSQL this process holds."""
    for path in list(_held):
        release(path)


def watch(data_dir: Path, interval: float = WATCH_INTERVAL) -> None:
    """The watchdog's loop: stop the server of ``data_dir`` once no holder is alive; return
    when it is stopped (by anyone) or another watchdog took over."""
    own = os.getpid()
    while True:
        time.sleep(interval)
        with _lock():
            if _read_pid(data_dir / WATCHDOG_PID) != own:
                return
            stop = _postmaster_pid(data_dir) is not None and not _live_holders(data_dir)
            if stop:
                try:
                    _stop(data_dir)
                except subprocess.CalledProcessError:
                    logger.exception("could not stop the embedded PostgreSQL in %s", data_dir)
            if stop or _postmaster_pid(data_dir) is None:
                (data_dir / WATCHDOG_PID).unlink(missing_ok=True)
                return


def run(data_dir: Path, command: list[str]) -> int:
    """Run ``command`` with ``DATABASE_URL`` set to the embedded PostgreSQL of ``data_dir``,
    held until it ends; its exit status.  SIGTERM and SIGHUP are passed on to it; SIGINT (a
    terminal's Ctrl-C reaches both) is left to it."""
    url = server_url(data_dir)
    child = subprocess.Popen(command, env={**os.environ, "DATABASE_URL": url})
    previous = {signum: signal.signal(signum, lambda signum, frame: child.send_signal(signum))
                for signum in (signal.SIGTERM, signal.SIGHUP)}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        release(data_dir)


def main(argv: list[str]) -> int:
    """``python -m ddpctl.embedded watch DATA_DIR`` (the watchdog) or
    ``python -m ddpctl.embedded run DATA_DIR COMMAND...`` (:func:`run`)."""
    if len(argv) >= 2 and argv[0] == "watch":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        logging.getLogger("pgserver").setLevel(logging.WARNING)
        watch(Path(argv[1]))
        return 0
    if len(argv) >= 3 and argv[0] == "run":
        logging.basicConfig(level=logging.WARNING)
        try:
            return run(Path(argv[1]), argv[2:])
        except EmbeddedUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print("usage: python -m ddpctl.embedded watch DATA_DIR | run DATA_DIR COMMAND...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
