"""Giving freed memory back to the operating system.

CPython frees a dropped send buffer at once, but glibc's allocator keeps most of the pages
(the chunks of many mid-sized strings sit below its mmap threshold), so the process RSS
would stay at its peak.  ``malloc_trim(0)`` (glibc) returns the free pages; elsewhere
(musl, macOS) this is a no-op.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["release_free_memory"]

logger = logging.getLogger(__name__)


def _load_malloc_trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        logger.debug("no malloc_trim in %s: freed memory stays with the allocator", name)
        return None


_malloc_trim = _load_malloc_trim()


def release_free_memory() -> bool:
    """Return the allocator's free pages to the OS; True if the C library could (glibc)."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True
