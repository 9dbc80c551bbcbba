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
again. Set ``CONVERGE_GC_FREEZE=0`` to leave the collector alone.
"""

from __future__ import annotations

import gc
import logging
import os

__all__ = ["freeze_startup_objects"]

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
    logger.debug("froze %d start-up objects out of the cyclic collector", gc.get_freeze_count())
    return True
