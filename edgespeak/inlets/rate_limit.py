"""Per-topic rate limit on MQTT inputs, with the ``limits`` library's moving window.

A flood on one topic (a looping automation, a stuck script) must not fill the queue or keep
the speaker busy for the others: past the limit an input is refused at once with a
``failed`` event, and inputs on other topics are not affected.
"""

from __future__ import annotations

from limits import parse_many, storage, strategies


class TopicRateLimit:
    """``spec``: the limits as ``"20/minute"`` or ``"5/second;60/hour"`` (all must allow).

    Raises ValueError for a spec the ``limits`` library cannot parse (config validation
    reports it first).
    """

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._items = parse_many(spec)
        self._limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())

    def allow(self, topic: str) -> bool:
        """Count one input on ``topic``; False (and not counted) when a limit is reached."""
        if not all(self._limiter.test(item, topic) for item in self._items):
            return False
        for item in self._items:
            self._limiter.hit(item, topic)
        return True

    def refusal(self, topic: str) -> str:
        """The ``failed`` reason for an input refused on ``topic``."""
        return f"rate limit: more than {self.spec} on {topic} ([limits] rate)"
