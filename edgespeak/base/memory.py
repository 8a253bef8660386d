"""Giving memory back to the system once the daemon is idle.

Two things keep a Python process larger than what it uses. Garbage in reference cycles waits
for the cyclic collector, whose full pass runs only after a quarter as many new long-lived
objects as there already are (tens of thousands after the imports): at idle, never. And
glibc's malloc keeps the pages of freed blocks inside its heap (a phrase's PCM chunks, freed
at the end of an announcement) until ``malloc_trim``.

:func:`settle_startup`, once start-up is over: a full collection, then ``gc.freeze()`` moves
what survived (modules, classes, configuration) out of the collector's sight, so later full
passes look only at what the daemon allocated since, and come as often as that grows.
:func:`release`, whenever the daemon goes idle: a full collection (cheap after the freeze)
and ``malloc_trim(0)``. Both block for milliseconds: call them from a thread.
"""

from __future__ import annotations

import ctypes
import gc
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None (another C library)."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    return trim


_TRIM = _malloc_trim()


def release() -> None:
    """Collect cyclic garbage and hand free heap pages back to the system (glibc)."""
    gc.collect()
    if _TRIM is not None:
        _TRIM(0)


def settle_startup() -> None:
    """:func:`release`, then freeze the survivors: call once, when start-up is over."""
    gc.collect()
    gc.freeze()
    if _TRIM is not None:
        _TRIM(0)
    log.debug("start-up settled: %d objects frozen", gc.get_freeze_count())
