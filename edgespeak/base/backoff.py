"""Reconnection delays: exponential, capped, jittered (shared/design.md, "websockets" habits)."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_s(
    failures: int,
    *,
    first_s: float = 0.5,
    max_s: float = 30.0,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after ``failures`` consecutive failures (1 = the first).

    The ceiling doubles from ``first_s`` per failure up to ``max_s``; the delay is half the
    ceiling plus a random part of the other half ("equal jitter"), so it always grows with the
    failures (no hot loop) and clients that failed together do not retry together.
    ``rng`` returns floats in [0, 1).
    """
    ceiling = min(max_s, first_s * 2.0 ** min(max(0, failures - 1), 40))
    return ceiling / 2 + rng() * ceiling / 2
