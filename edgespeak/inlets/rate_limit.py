"""Per-topic rate limit on MQTT inputs: token buckets of the ``token-bucket`` library.

A flood on one topic (a looping automation, a stuck script) must not fill the queue or keep
the speaker busy for the others: past the limit an input is refused at once with a
``failed`` event, and inputs on other topics are not affected.

Each limit ``N`` per period (``[limits] rate``, :mod:`edgespeak.config.rates`) is a bucket of
``N`` tokens per topic, refilled at ``N`` per period: a burst of ``N`` passes at once, and then
``N`` per period on average. An input takes one token from every bucket of its topic, and only
when each has one: a refused input costs nothing.

Until issue 17 this was the ``limits`` library's moving window (at most ``N`` in any period;
the bucket lets up to ``2N`` through across a period boundary, a burst after a quiet period).
It was replaced for its weight: importing it brought ``deprecated``, ``wrapt``, ``packaging``
and every storage back-end it knows, 1.5 MiB of a daemon that must idle under 55 MiB, and its
in-memory storage started a timer thread on nearly every hit, on the event loop, which had to
be switched off by overriding its private methods. ``token-bucket`` imports nothing but
``time`` and starts no thread.
"""

from __future__ import annotations

from token_bucket import MemoryStorage

from edgespeak.config.rates import parse_rates


class TopicRateLimit:
    """``spec``: the limits as ``"20/minute"`` or ``"5/second;60/hour"`` (all must allow).

    Not thread-safe: call it from one thread (the event loop). Raises ValueError for a spec
    :func:`~edgespeak.config.rates.parse_rates` refuses (config validation reports it first).
    """

    def __init__(self, spec: str) -> None:
        self.spec = spec
        # one storage per limit: (tokens per second, capacity in tokens) and its buckets by topic
        self._buckets = [
            (rate.amount / rate.period_s, rate.amount, MemoryStorage())
            for rate in parse_rates(spec)
        ]

    def allow(self, topic: str) -> bool:
        """Count one input on ``topic``; False (and not counted) when a limit is reached.
        Starts no thread."""
        for per_s, capacity, buckets in self._buckets:
            buckets.replenish(topic, per_s, capacity)  # a new topic starts full
            if buckets.get_token_count(topic) < 1:
                return False
        for _, _, buckets in self._buckets:
            buckets.consume(topic, 1)
        return True

    def refusal(self, topic: str) -> str:
        """The ``failed`` reason for an input refused on ``topic``."""
        return f"rate limit: more than {self.spec} on {topic} ([limits] rate)"
