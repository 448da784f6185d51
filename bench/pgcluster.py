"""A throwaway PostgreSQL cluster with ``pg_stat_statements`` preloaded, for the benchmark.

    with PrivateCluster.find() as cluster:      # None when no system binaries
        url = cluster.url                        # postgresql://postgres@127.0.0.1:PORT/postgres

The embedded PostgreSQL (``pgserver``) does not ship ``pg_stat_statements``; a system
installation (``/usr/lib/postgresql/<major>/bin``) usually does.  The cluster lives in a
temporary directory (``initdb``, trust authentication, TCP on a free port of 127.0.0.1 and
a Unix socket in that directory) and is stopped and deleted on exit, also on an exception or
Ctrl-C; if this process dies without cleaning up (SIGKILL), the postmaster gets SIGQUIT from
the kernel (parent-death signal) and shuts down at once.  Run as root, it runs as the
``postgres`` system user (``initdb`` refuses root).
"""
from __future__ import annotations

import ctypes
import glob
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PrivateCluster", "ClusterUnavailable"]

logger = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1
_PREFIX = "ddpbench-pg-"


class ClusterUnavailable(RuntimeError):
    """No usable PostgreSQL binaries with pg_stat_statements on this machine."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _remove_abandoned() -> None:
    """Delete the directories of earlier clusters whose benchmark was killed (SIGKILL
    leaves the directory behind): no live postmaster, and older than a minute (a cluster
    being created by another benchmark right now has no postmaster.pid yet)."""
    for path in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        try:
            pid = int((path / "data" / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
            continue  # running
        except PermissionError:
            continue  # running, as another user
        except ProcessLookupError:
            pass
        except (OSError, ValueError, IndexError):
            if time.time() - path.stat().st_mtime < 60:
                continue
        logger.info("removing abandoned %s", path)
        shutil.rmtree(path, ignore_errors=True)


def _die_with_parent() -> None:
    """In the postmaster's child process before exec: SIGQUIT (immediate shutdown) when
    the benchmark dies.  Set after the uid change, which would clear it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGQUIT, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


class PrivateCluster:
    """One private PostgreSQL cluster; see the module docstring.

    ``url`` is the superuser's (``postgres``, no password) URL of database ``postgres``;
    ``pid`` is the postmaster's process id (its backends are its children).
    """

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.version = bindir.parent.name
        self.port = 0
        self.pid = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._as_user: str | None = None

    @classmethod
    def find(cls) -> PrivateCluster | None:
        """The newest ``/usr/lib/postgresql/*/bin`` with initdb, postgres and the
        pg_stat_statements library and extension files; None if there is none (or root
        without a ``postgres`` user)."""
        for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: float(Path(p).parent.name),
                             reverse=True):
            base = Path(bindir)
            version = base.parent.name
            if not ((base / "initdb").exists() and (base / "postgres").exists()
                    and (base.parent / "lib" / "pg_stat_statements.so").exists()
                    and Path(f"/usr/share/postgresql/{version}/extension/pg_stat_statements.control").exists()):
                continue
            if os.geteuid() == 0:
                try:
                    pwd.getpwnam("postgres")
                except KeyError:
                    return None
            return cls(base)
        return None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run_kwargs(self) -> dict:
        return {"user": self._as_user, "group": self._as_user, "extra_groups": []} if self._as_user else {}

    def start(self, timeout: float = 30.0) -> PrivateCluster:
        """initdb and start; raises ClusterUnavailable (with initdb's or the server's
        output) if either fails or the server does not accept connections in ``timeout`` s."""
        _remove_abandoned()
        self._dir = Path(tempfile.mkdtemp(prefix=_PREFIX))
        try:
            if os.geteuid() == 0:
                self._as_user = "postgres"
                entry = pwd.getpwnam("postgres")
                os.chown(self._dir, entry.pw_uid, entry.pw_gid)
            data = self._dir / "data"
            done = subprocess.run([str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                                   "-E", "UTF8", "--locale=C", "--no-sync"],
                                  capture_output=True, text=True, cwd=self._dir, **self._run_kwargs())
            if done.returncode != 0:
                raise ClusterUnavailable(f"initdb failed: {done.stdout}{done.stderr}")
            self.port = _free_port()
            log = open(self._dir / "server.log", "wb")  # the child process writes to it
            settings = {
                "port": self.port, "listen_addresses": "127.0.0.1", "unix_socket_directories": str(self._dir),
                "shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "top",
                "pg_stat_statements.track_utility": "on", "pg_stat_statements.max": 10000,
                "max_connections": 300, "logging_collector": "off",
            }
            args = [str(self.bindir / "postgres"), "-D", str(data)]
            for key, value in settings.items():
                args += ["-c", f"{key}={value}"]
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self._dir,
                                          preexec_fn=_die_with_parent, **self._run_kwargs())
            log.close()
            self.pid = self._proc.pid
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        logger.info("private PostgreSQL %s on port %d in %s", self.version, self.port, self._dir)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise ClusterUnavailable(f"postgres exited with {self._proc.returncode}: {self.log()}")
            try:
                psycopg2.connect(self.url, connect_timeout=2).close()
                return
            except psycopg2.OperationalError as error:
                if time.monotonic() > deadline:
                    raise ClusterUnavailable(
                        f"postgres did not accept connections in {timeout} s: {self.log()}") from error
                time.sleep(0.1)

    def log(self) -> str:
        """The server's output so far ('' once stopped)."""
        if self._dir is None or not (self._dir / "server.log").exists():
            return ""
        return (self._dir / "server.log").read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGINT: disconnects clients), then SIGQUIT, SIGKILL; deletes
        the directory.  Safe to call twice."""
        if self._proc is not None and self._proc.poll() is None:
            for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
                self._proc.send_signal(sig)
                try:
                    self._proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    logger.warning("private PostgreSQL did not stop on %s", signal.Signals(sig).name)
        self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> PrivateCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
