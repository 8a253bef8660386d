"""What plays when: a priority queue with preemption, time-to-live, duplicates and stop.

Rules (the README states them for users):

- Announcements play one at a time, highest ``priority`` first (``critical`` > ``high`` >
  ``normal`` > ``low``); equal priorities play in arrival order.
- One with a strictly higher priority than the one playing interrupts it: the playing one is
  faded out and dropped (state ``interrupted``), the interrupter plays next. So ``critical``
  interrupts everything else, and nothing interrupts an announcement of its own priority.
- An announcement still waiting when its ``ttl_s`` (payload, else ``[daemon] ttl_s``) has
  passed since receipt is dropped unspoken (state ``expired``).
- A payload ``id`` accepted within ``[daemon] dedup_window_s`` is ignored (a QoS 1 redelivery,
  a double-fired automation): logged, no event (the README: "ignored"; the first one has its
  events). Only accepted ids count: one that failed for a full queue (refused, or dropped for a
  newcomer) was never spoken, so the same id sent again is handled afresh.
- At most ``[daemon] queue_max`` announcements wait. When full, a newcomer that outranks the
  lowest-priority waiting one takes its place (that one fails with "dropped: queue full");
  otherwise the newcomer fails with "queue full". The queue always holds the ones that would
  play first.
- :meth:`Scheduler.stop` (``<prefix>/<node_id>/stop``) interrupts the playing announcement and
  drops every waiting one (state ``interrupted``).
- :meth:`Scheduler.close` (the daemon stopping) does the same, then refuses newcomers (state
  ``failed``); :meth:`Scheduler.run` returns once the playing one has ended, so every
  announcement has had its last event by then.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

from edgespeak.base.announcement import Announcement
from edgespeak.base.events import Event

log = logging.getLogger(__name__)
Speak = Callable[[Announcement], Coroutine[Any, Any, Event]]
Publish = Callable[[Event], None]


class Scheduler:
    """Runs ``speak`` for one announcement at a time; publishes the scheduling events.

    ``speak`` publishes ``playing``/``finished``/``failed`` itself and is cancelled to
    interrupt (it must fade out and re-raise). ``prepare`` (optional, must not raise) is told
    of an announcement as soon as it is queued to play next (nothing is playing, or it
    interrupts what is), before its ``received`` event and the hop to :meth:`run`, so that
    its audio gets ready meanwhile. Times are ``time.monotonic()`` seconds.
    """

    def __init__(
        self,
        speak: Speak,
        publish: Publish,
        *,
        queue_max: int,
        ttl_s: float,
        dedup_window_s: float,
        on_internal_error: Callable[[Announcement, BaseException], None],
        prepare: Callable[[Announcement], None] | None = None,
    ) -> None:
        self._speak = speak
        self._prepare = prepare
        self._publish = publish
        self._queue_max = queue_max
        self._ttl_s = ttl_s
        self._dedup_window_s = dedup_window_s
        self._on_internal_error = on_internal_error
        self._waiting: list[tuple[int, int, Announcement]] = []  # heap of (-rank, seq, ann)
        self._seq = itertools.count()
        self._seen: OrderedDict[str, float] = OrderedDict()  # payload id → receipt time
        self._current: tuple[Announcement, asyncio.Task[Event]] | None = None
        self._interrupted: dict[asyncio.Task[Event], str] = {}
        self._wakeup = asyncio.Event()
        self._closed: str | None = None  # why newcomers are refused, once closed

    @property
    def idle(self) -> bool:
        """Nothing is playing and nothing waits: an announcement queued now plays at once
        (unless refused, a duplicate, or placed at a start instant by a group)."""
        return self._current is None and not self._waiting

    @property
    def queue_length(self) -> int:
        """Announcements waiting (the playing one not counted)."""
        return len(self._waiting)

    def submit(self, ann: Announcement) -> None:
        """Queue ``ann`` (publishing ``received``), or ignore/refuse it per the rules above;
        interrupts the playing announcement if ``ann`` outranks it. Once closed, ``ann`` fails
        ("not accepted: <why>")."""
        if self._closed is not None:
            log.info("refusing %s: %s", ann.id, self._closed)
            self._publish(Event(ann.id, "failed", error=f"not accepted: {self._closed}"))
            return
        if ann.id_given and self._is_duplicate(ann):
            log.info("ignoring duplicate announcement id %s", ann.id)
            return
        if len(self._waiting) >= self._queue_max and not self._make_room(ann):
            error = f"queue full ({self._queue_max} announcements waiting)"
            log.warning("dropping %s: %s", ann.id, error)
            self._publish(Event(ann.id, "failed", error=error))
            return
        if ann.id_given:
            self._seen[ann.id] = ann.received_at
        heapq.heappush(self._waiting, (-ann.rank, next(self._seq), ann))
        starts = self._current is None or ann.rank > self._current[0].rank
        if self._prepare is not None and starts and self._waiting[0][2] is ann:
            self._prepare(ann)  # first: its audio gets ready while the rest goes on
        self._publish(Event(ann.id, "received"))
        if self._current is not None and ann.rank > self._current[0].rank:
            playing, task = self._current
            self._interrupt(task, f"interrupted by {ann.id} ({ann.priority} priority)")
            log.info(
                "%s (%s) interrupts %s (%s)", ann.id, ann.priority, playing.id, playing.priority
            )
        self._wakeup.set()

    def stop(self, cause: str | None = None) -> None:
        """Interrupt the playing announcement and drop every waiting one (``interrupted``,
        error ``stopped`` or ``stopped before it played``, followed by `` (cause)`` if given)."""
        suffix = f" ({cause})" if cause else ""
        dropped, self._waiting = self._waiting, []
        for _, _, ann in sorted(dropped):
            self._publish(Event(ann.id, "interrupted", error=f"stopped before it played{suffix}"))
        if self._current is not None:
            self._interrupt(self._current[1], f"stopped{suffix}")
        log.info(
            "stop: %d waiting dropped%s",
            len(dropped),
            ", playing one stopped" * bool(self._current),
        )

    def close(self, why: str) -> None:
        """:meth:`stop` with ``why`` as the cause, then refuse every newcomer; :meth:`run`
        returns once the playing announcement has ended (its ``interrupted`` published)."""
        self._closed = why
        self.stop(why)
        self._wakeup.set()

    def _interrupt(self, task: asyncio.Task[Event], why: str) -> None:
        if task not in self._interrupted:
            self._interrupted[task] = why
            task.cancel()

    def _is_duplicate(self, ann: Announcement) -> bool:
        """Whether ``ann``'s id was accepted within the dedup window (older ones forgotten)."""
        horizon = ann.received_at - self._dedup_window_s
        while self._seen and next(iter(self._seen.values())) < horizon:
            self._seen.popitem(last=False)
        return ann.id in self._seen

    def _make_room(self, ann: Announcement) -> bool:
        """Drop the waiting announcement that would play last if ``ann`` outranks it."""
        last = max(self._waiting)  # lowest rank, then latest arrival
        if -last[0] >= ann.rank:
            return False
        self._waiting.remove(last)
        heapq.heapify(self._waiting)
        if last[2].id_given:
            self._seen.pop(last[2].id, None)  # never spoken: the same id may come again
        error = f"dropped: queue full and {ann.id} ({ann.priority} priority) came in"
        log.warning("dropping %s: %s", last[2].id, error)
        self._publish(Event(last[2].id, "failed", error=error))
        return True

    def _expired(self, ann: Announcement, now: float) -> str | None:
        ttl = ann.ttl_s if ann.ttl_s is not None else self._ttl_s
        age = now - ann.received_at
        return f"waited {age:.1f} s, longer than its ttl_s {ttl:g}" if age > ttl else None

    async def run(self) -> None:
        """Speak queued announcements until :meth:`close` (then return once the playing one has
        ended) or cancelled (the playing one is then cancelled, without an event)."""
        while True:
            while not self._waiting:
                if self._closed is not None:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            _, _, ann = heapq.heappop(self._waiting)
            if (why := self._expired(ann, time.monotonic())) is not None:
                log.info("%s expired: %s", ann.id, why)
                self._publish(Event(ann.id, "expired", error=why))
                continue
            task = asyncio.create_task(self._speak(ann), name=f"speak-{ann.id}")
            self._current = (ann, task)
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                task.cancel()
                await asyncio.wait({task})
                raise
            finally:
                self._current = None
                why = self._interrupted.pop(task, None)
            if task.cancelled():
                self._publish(Event(ann.id, "interrupted", error=why or "cancelled"))
            elif (exc := task.exception()) is not None:
                self._on_internal_error(ann, exc)
