"""The scheduler tells the speaker which announcement plays next as soon as it is queued (so its
audio is got ready during the hops to the speaking task), and only that one."""

from __future__ import annotations

import asyncio
import time

from edgespeak.base.announcement import Announcement, Priority
from edgespeak.base.events import Event
from edgespeak.scheduling.scheduler import Scheduler


class Speaking:
    """What the scheduler runs: ``speak`` plays until :attr:`release` is set; what it was told
    to prepare and what it spoke, in order."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: asyncio.Queue[str] = asyncio.Queue()
        self.prepared: list[str] = []
        self.spoken: list[str] = []
        self.events: list[Event] = []

    def prepare(self, ann: Announcement) -> None:
        self.prepared.append(ann.id)

    async def speak(self, ann: Announcement) -> Event:
        self.spoken.append(ann.id)
        self.started.put_nowait(ann.id)
        await self.release.wait()
        return Event(ann.id, "finished")


def ann(ann_id: str, priority: Priority = "normal") -> Announcement:
    return Announcement(text=ann_id, id=ann_id, priority=priority, received_at=time.monotonic())


async def test_prepare_is_told_of_the_announcement_that_plays_next_before_it_is_spoken() -> None:
    s = Speaking()
    scheduler = Scheduler(
        s.speak, s.events.append, queue_max=10, ttl_s=60, dedup_window_s=0,
        on_internal_error=lambda a, e: None, prepare=s.prepare,
    )  # fmt: skip
    running = asyncio.create_task(scheduler.run())
    scheduler.submit(ann("first"))
    assert s.prepared == ["first"] and s.spoken == []  # at once, before the hop to run()
    assert await asyncio.wait_for(s.started.get(), 5) == "first"
    scheduler.submit(ann("same-rank"))  # waits behind the playing one: not prepared now
    scheduler.submit(ann("low", "low"))
    assert s.prepared == ["first"]
    scheduler.submit(ann("urgent", "critical"))  # interrupts: plays next
    assert s.prepared == ["first", "urgent"]
    assert await asyncio.wait_for(s.started.get(), 5) == "urgent"
    s.release.set()
    scheduler.close("test over")
    await asyncio.wait_for(running, 5)
    assert s.spoken == ["first", "urgent"]
    assert [e.state for e in s.events if e.id == "first"] == ["received", "interrupted"]
