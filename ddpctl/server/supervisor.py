"""``ddpctl serve --workers N``: N serving processes on the same listening sockets.

The parent binds the addresses with ``SO_REUSEPORT`` (holding them, never listening),
forks the workers, each of which binds and listens on its own ``SO_REUSEPORT`` socket so
the kernel spreads connections evenly (a single shared socket would let the busiest
process accept nearly everything).  Each worker is a full server with its own database
workers and change dispatcher.  The parent forwards SIGTERM/SIGINT, restarts a worker that
dies unexpectedly, and exits 0 once all have shut down gracefully.  On Linux a worker also
gets SIGTERM when the parent dies without forwarding it (``kill -9``): no orphan serves on.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable

import gevent

from ..stop_signals import handle_stop_signals

__all__ = ["run_workers"]

logger = logging.getLogger(__name__)
_RESTART_DELAY = 1.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _stop_with_parent(parent: int) -> None:
    """Linux: SIGTERM this worker when the supervisor dies, however it dies (``kill -9``
    too), so that no orphan keeps serving (``PR_SET_PDEATHSIG``); elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        logger.warning("worker %d: prctl(PR_SET_PDEATHSIG) failed: %s", os.getpid(),
                       os.strerror(ctypes.get_errno()))
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def run_workers(count: int, serve_one: Callable[[], None],
                on_exit: Callable[[int], None] | None = None) -> int:
    """Run ``serve_one`` in ``count`` forked processes until a signal stops them all;
    ``on_exit(pid)`` after each worker exits (the metrics forget its files)."""
    stopping = False
    children: dict[int, int] = {}  # pid -> worker number

    def forward(signum: int) -> None:
        nonlocal stopping
        if not stopping:
            logger.info("stopping %d worker(s) (%s)", len(children), signal.Signals(signum).name)
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass  # already gone; waitpid below collects it

    handlers = [gevent.signal_handler(sig, forward, sig) for sig in (signal.SIGTERM, signal.SIGINT)]

    parent = os.getpid()

    def spawn(number: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            for handler in handlers:
                handler.cancel()
            # Until its server has its own handlers, a stop signal ends the worker cleanly
            # (the parent forwards SIGTERM to a worker still starting up).
            handle_stop_signals()
            _stop_with_parent(parent)
            code = 0
            try:
                serve_one()
            except KeyboardInterrupt:
                logger.info("worker %d stopped while starting up", number)
            except BaseException:
                logger.exception("worker %d failed", number)
                code = 1
            finally:
                os._exit(code)  # skip the parent's atexit handlers
        children[pid] = number
        logger.info("worker %d started (pid %d)", number, pid)

    for number in range(1, count + 1):
        spawn(number)
    failures = 0
    try:
        while children:
            gevent.sleep(0.1)
            while children:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                number = children.pop(pid, None)
                if number is None:
                    continue
                if on_exit is not None:
                    try:
                        on_exit(pid)
                    except Exception:
                        logger.exception("cleaning up after worker %d (pid %d) failed", number, pid)
                code = os.waitstatus_to_exitcode(status)
                if stopping:
                    if code != 0:
                        failures += 1
                    continue
                logger.error("worker %d (pid %d) exited with %d; restarting it", number, pid, code)
                gevent.sleep(_RESTART_DELAY)
                if not stopping:  # a signal during the delay: no new worker it would miss
                    spawn(number)
    finally:
        for handler in handlers:
            handler.cancel()
    logger.info("all workers stopped")
    return 1 if failures else 0
