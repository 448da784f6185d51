"""The process's open-file limit: raised to its hard limit when the server starts.

Every client connection is a file descriptor; the common soft limit of 1,024 would make a
busy server (or a slowloris attack) refuse everyone with ``EMFILE``.  Like nginx's
``worker_rlimit_nofile`` or Node's start-up, the process raises its own soft
``RLIMIT_NOFILE`` to the hard limit, which needs no privilege.
"""
from __future__ import annotations

import logging

__all__ = ["LOW_HARD_LIMIT", "raise_open_file_limit"]

logger = logging.getLogger(__name__)
LOW_HARD_LIMIT = 4096  # below this, warn: a few thousand clients would exhaust it


def raise_open_file_limit() -> int | None:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; the new soft limit, or ``None``
    where there is no ``resource`` module (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        target = 1 << 20  # unlimited is refused as a soft value on some systems (macOS)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            logger.debug("open-file limit raised from %d to %d", soft, target)
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    else:
        logger.debug("open-file limit: %s (hard %s)", soft, hard)
    if hard != resource.RLIM_INFINITY and hard < LOW_HARD_LIMIT:
        logger.warning("the open-file limit is %d (hard): at most about that many clients at once; "
                       "raise it (ulimit -Hn, LimitNOFILE= in systemd)", hard)
    return soft
