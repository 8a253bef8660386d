"""Per-topic rate limit on MQTT inputs: a moving window per limit and topic.

A flood on one topic (a looping automation, a stuck script) must not fill the queue or keep
the speaker busy for the others: past the limit an input is refused at once with a
``failed`` event, and inputs on other topics are not affected.

The window is the ``limits`` library's moving window (which this replaced, see
:mod:`edgespeak.config.rates`): an input is allowed while fewer than ``amount`` inputs on its
topic were allowed in the last ``window_s`` seconds; refused inputs do not count.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from edgespeak.config.rates import parse_rates


class TopicRateLimit:
    """``spec``: the limits as ``"20/minute"`` or ``"5/second;60/hour"`` (all must allow).
    ``clock``: seconds, monotonic.

    Raises ValueError for a spec that is not the notation (config validation reports it first).
    Memory: at most ``amount`` timestamps per limit and topic.
    """

    def __init__(self, spec: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self._rates = parse_rates(spec)
        self._clock = clock
        self._allowed: dict[str, list[deque[float]]] = {}  # per topic, per rate: times allowed

    def allow(self, topic: str) -> bool:
        """Count one input on ``topic``; False (and not counted) when a limit is reached."""
        now = self._clock()
        windows = self._allowed.setdefault(topic, [deque() for _ in self._rates])
        for rate, times in zip(self._rates, windows, strict=True):
            while times and times[0] <= now - rate.window_s:
                times.popleft()
        if any(len(times) >= rate.amount for rate, times in zip(self._rates, windows, strict=True)):
            return False
        for times in windows:
            times.append(now)
        return True

    def refusal(self, topic: str) -> str:
        """The ``failed`` reason for an input refused on ``topic``."""
        return f"rate limit: more than {self.spec} on {topic} ([limits] rate)"
