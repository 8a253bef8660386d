"""Per-topic rate limit on MQTT inputs, with the ``limits`` library's moving window.

A flood on one topic (a looping automation, a stuck script) must not fill the queue or keep
the speaker busy for the others: past the limit an input is refused at once with a
``failed`` event, and inputs on other topics are not affected.

The library's in-memory storage (limits 5) drops expired window entries from a
``threading.Timer`` that it starts anew on a hit whenever the previous timer has run out
(10 ms after it started): a new thread for nearly every announcement, started on the event
loop on the announcement's way to the speaker, where ``Thread.start`` waits until the thread
runs. Measured on an idle 2-vCPU machine: 4-7 ms per announcement, 0.9 ms inside the running
daemon (issue 17). :class:`_LoopExpiryStorage` keeps the library's storage and strategy and
drops the expired entries from :meth:`TopicRateLimit.allow` instead, at most once per
``EXPIRE_EVERY_S``, on the caller's thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

from limits import parse_many, storage, strategies

EXPIRE_EVERY_S = 10.0  # expired window entries are dropped at most this often (s)
# limits 5's MemoryStorage methods, name-mangled (private): the timer start and the expiry.
_SCHEDULE = "_MemoryStorage__schedule_expiry"
_EXPIRE = "_MemoryStorage__expire_events"
for _name in (_SCHEDULE, _EXPIRE):
    if not callable(getattr(storage.MemoryStorage, _name, None)):  # pragma: no cover
        raise ImportError(f"limits.storage.MemoryStorage has no {_name} (limits>=5,<6 expected)")


class _LoopExpiryStorage(storage.MemoryStorage):
    """The library's MemoryStorage, with no timer thread per hit: its expiry runs when
    :meth:`expire` is called."""

    def _MemoryStorage__schedule_expiry(self) -> None:
        """Called by the library on every hit to start its timer thread: does nothing."""

    def expire(self) -> None:
        """Drop the window entries that have expired (the library's own expiry)."""
        cast(Callable[[], None], getattr(self, _EXPIRE))()


class TopicRateLimit:
    """``spec``: the limits as ``"20/minute"`` or ``"5/second;60/hour"`` (all must allow).

    Not thread-safe: call it from one thread (the event loop). Raises ValueError for a spec
    the ``limits`` library cannot parse (config validation reports it first).
    """

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._items = parse_many(spec)
        self._storage = _LoopExpiryStorage()
        self._limiter = strategies.MovingWindowRateLimiter(self._storage)
        self._expired_at = time.monotonic()

    def allow(self, topic: str) -> bool:
        """Count one input on ``topic``; False (and not counted) when a limit is reached.
        Starts no thread."""
        now = time.monotonic()
        if now - self._expired_at >= EXPIRE_EVERY_S:
            self._expired_at = now
            self._storage.expire()
        if not all(self._limiter.test(item, topic) for item in self._items):
            return False
        for item in self._items:
            self._limiter.hit(item, topic)
        return True

    def refusal(self, topic: str) -> str:
        """The ``failed`` reason for an input refused on ``topic``."""
        return f"rate limit: more than {self.spec} on {topic} ([limits] rate)"
