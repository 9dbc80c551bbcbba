"""Short full garbage collections in a runtime process: start-up objects frozen once.

CPython's cyclic collector walks every tracked object on each full (generation 2)
collection. In a runtime process most of them are made at start-up and live as long
as the process (modules, classes, pydantic schemas, the projections caught up), yet a
full collection walked them all, pausing the event loop for 30-50 ms on a 2-core
machine: every task in flight waited, which made the p99 of submit -> completed (see
docs/benchmarks.md, runtime section). The first runtime started in a process collects
once and then calls :func:`gc.freeze`, which moves what survived to the permanent
generation the collector no longer walks (still freed by reference counting).

Objects made later are collected as usual; a process whose heap grows (a task
projection keeps every task it has seen) sees its full collections grow with it
again. The youngest generation is also collected every 10,000 net allocations instead
of CPython's 700: a runtime allocates and frees a few hundred objects per event, so
the default ran a young collection every few events, about 8% of the demo's CPU
(``converge run --agents 4 --tasks 8000``: 5.1 s against 4.7 s of CPU, four
alternating pairs; docs/benchmarks.md). Set ``CONVERGE_GC_FREEZE=0`` to leave the
collector alone.
"""

from __future__ import annotations

import gc
import logging
import os

__all__ = ["freeze_startup_objects"]

#: Net allocations between two collections of the youngest generation (CPython: 700).
YOUNG_THRESHOLD = 10_000

logger = logging.getLogger(__name__)

_done = False


def freeze_startup_objects() -> bool:
    """Collect once, then freeze what survived; only the first call per process acts.

    Returns whether this call froze anything.
    """
    global _done
    if _done:
        return False
    _done = True
    if os.environ.get("CONVERGE_GC_FREEZE", "1").strip() == "0":
        return False
    gc.collect()
    gc.freeze()
    young, *older = gc.get_threshold()
    if 0 < young < YOUNG_THRESHOLD:  # 0: collection turned off by the application
        gc.set_threshold(YOUNG_THRESHOLD, *older)
    logger.debug("froze %d start-up objects out of the cyclic collector", gc.get_freeze_count())
    return True
