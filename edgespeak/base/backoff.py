"""Reconnection delays: one policy for the broker link and the TTS provider clients.

Exponential, capped, jittered (as the ``websockets`` library reconnects). A caller counts its
failures and asks :meth:`Backoff.after`; the policy is also a tenacity ``wait=`` strategy (it is
called with tenacity's retry state), without importing tenacity: the daemon's retry loops are
plain loops.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol


class _RetryState(Protocol):
    attempt_number: int


class Backoff:
    """Seconds to wait after the n-th failure in a row (n = 1 for the first).

    The ceiling is ``first_s`` doubled per failure after the first, capped at ``max_s`` (as
    tenacity's ``wait_exponential(multiplier=first_s, max=max_s)``); the delay is half the
    ceiling plus a random part of the other half ("equal jitter"), so it always grows with the
    failures (no hot loop) and clients that failed together do not retry together. ``rng``
    returns floats in [0, 1).

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
        self._first_s = first_s
        self._max_s = max_s
        self._rng = rng

    def ceiling(self, failures: int) -> float:
        """The largest wait after ``failures`` consecutive failures, seconds."""
        try:
            exponential = self._first_s * 2.0 ** (max(1, failures) - 1)
        except OverflowError:
            return self._max_s
        return max(0.0, min(exponential, self._max_s))

    def after(self, failures: int) -> float:
        """The wait after ``failures`` consecutive failures (at least 1), seconds."""
        ceiling = self.ceiling(failures)
        return ceiling / 2 + self._rng() * ceiling / 2

    def __call__(self, retry_state: _RetryState) -> float:
        """The wait before the next attempt after attempt ``retry_state.attempt_number``
        failed, seconds (tenacity's ``wait=`` hook)."""
        return self.after(retry_state.attempt_number)
