"""Reconnection delays: one policy for the broker link and the TTS provider clients.

Exponential, capped, jittered (as the ``websockets`` library reconnects), written as a tenacity
wait strategy so that a ``tenacity.AsyncRetrying`` loop uses it as is; a caller that counts
its failures itself asks :meth:`Backoff.after`.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from tenacity import RetryCallState, Retrying, wait_exponential


class Backoff(wait_exponential):
    """Seconds to wait after the n-th failure in a row (n = 1 for the first).

    The ceiling is ``first_s`` doubled per failure after the first, capped at ``max_s``
    (tenacity's :class:`~tenacity.wait_exponential`); the delay is half the ceiling plus a
    random part of the other half ("equal jitter"), so it always grows with the failures (no
    hot loop) and clients that failed together do not retry together. ``rng`` returns floats
    in [0, 1).

    The count restarts after a success: a caller counting failures resets its count; a
    tenacity loop starts a new ``AsyncRetrying`` once connected (its attempts count from 1).
    """

    def __init__(
        self,
        *,
        first_s: float = 0.5,
        max_s: float = 30.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(multiplier=first_s, max=max_s)
        self._rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        """The wait before the next attempt after attempt ``retry_state.attempt_number``
        failed, seconds (tenacity's ``wait=`` hook)."""
        ceiling = super().__call__(retry_state)
        return ceiling / 2 + self._rng() * ceiling / 2

    def after(self, failures: int) -> float:
        """The wait after ``failures`` consecutive failures (at least 1), seconds."""
        state = RetryCallState(Retrying(), None, (), {})
        state.attempt_number = max(1, failures)
        return self(state)
