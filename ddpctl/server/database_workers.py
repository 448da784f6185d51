"""The system lane: a fixed set of greenlets that run the server's own ORM work.

Observer refreshes (change delivery), the node's registry heartbeat, operator commands
and changelog pruning run here, on ``size`` worker greenlets that take jobs from a queue.
Django keeps one database connection per greenlet, so the lane holds at most ``size``
connections, each kept between jobs, checked at most once a second and after a job that
raised.  User code (methods, publications, Django views)
never runs here: it leases connections from :mod:`.database_pool` instead, so however
long it takes, it cannot delay the system lane.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import gevent
from gevent.event import AsyncResult
from gevent.queue import Queue

__all__ = ["DatabaseWorkers"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
CHECK_INTERVAL = 1.0  # seconds between checks of a worker's connection (and after any error)


class DatabaseWorkers:
    """``size`` greenlets, each with its own database connection, running jobs in order."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._queue: Queue = Queue()
        self.busy = 0  # workers running a job now
        self._workers = [gevent.spawn(self._work) for _ in range(size)]

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a worker; block this greenlet until done; re-raise errors."""
        result: AsyncResult = AsyncResult()
        self._queue.put((fn, args, result))
        return result.get()

    @property
    def queued(self) -> int:
        """Jobs waiting for a free worker."""
        return self._queue.qsize()

    def _work(self) -> None:
        from django.db import close_old_connections, connections

        checked_at = -CHECK_INTERVAL
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    return
                fn, args, result = job
                if time.monotonic() - checked_at >= CHECK_INTERVAL:
                    # Drops connections that broke or outlived CONN_MAX_AGE; with
                    # CONN_HEALTH_CHECKS the next query first runs Django's health check
                    # (SELECT 1): so at most once per interval, not before every job.
                    close_old_connections()
                    checked_at = time.monotonic()
                self.busy += 1
                try:
                    result.set(fn(*args))
                except BaseException as exc:  # handed to the waiting greenlet, which re-raises
                    result.set_exception(exc)
                    checked_at = -CHECK_INTERVAL  # check the connection before the next job
                finally:
                    self.busy -= 1
        finally:
            connections.close_all()

    def stop(self, timeout: float = 5.0) -> None:
        for _ in self._workers:
            self._queue.put(None)
        gevent.joinall(self._workers, timeout=timeout)
        gevent.killall([w for w in self._workers if not w.dead])
