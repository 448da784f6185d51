"""Python's cyclic garbage collector, tuned for a server that holds many live documents.

CPython runs a young-generation collection every ``threshold0`` (700) net allocations of
container objects, a middle one every ``threshold1`` (10) young ones, and a full one every
``threshold2`` (10) middle ones once a quarter of the long-lived objects are new.  A new
subscriber's 10,000 documents add about 150,000 containers that live on (the session's
mergebox holds a view, a set, a dict and two lists per field of each document), and each
collection walks what it holds: the collector ran about 200 times per 10,000 documents,
and a full collection walks the whole heap -- Django, every observer's documents, every
session's mergebox.  Sampled under ``bench/ddpbench.py --only initial`` it took 50-69% of
an initial subscription (issue 14); a native profile still showed 22% with threshold0 at
50,000, in middle-generation collections of 500,000 objects (200 ms each).

:func:`tune` (called once, when the server has started listening) moves everything allocated at
start (Django, the project's modules, URL patterns) to the permanent generation
(``gc.freeze()``: never walked again; never freed, which it would not be anyway) and sets
``threshold0`` to :data:`YOUNG_THRESHOLD`.  Measured on 10,000-document sessions that come
and go (a mergebox each), CPU per session: 129-140 ms at 700, 64-82 ms at 10,000, 70-75 ms
at 20,000 and 50,000 (with longer pauses), 44 ms with the collector off.  10,000 keeps a
young collection under a few milliseconds and a middle one to about 100,000 objects.
Cycles are still collected; garbage in a cycle may live that many allocations longer.
See README.rst, "Performance: where the time goes".
"""
from __future__ import annotations

import gc
import logging

__all__ = ["YOUNG_THRESHOLD", "tune"]

logger = logging.getLogger(__name__)

YOUNG_THRESHOLD = 10_000
"""Net container allocations between two young-generation collections (CPython: 700)."""


def tune() -> None:
    """Freeze what exists now and raise the young generation's threshold (module docstring)."""
    gc.collect()  # what start-up left as garbage goes now, not into the permanent generation
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    logger.debug("garbage collector: %d objects frozen, thresholds %r", gc.get_freeze_count(),
                 gc.get_threshold())
