"""The scheduler tells the speaker which announcement plays next as soon as it is queued (so its
audio is got ready during the hops to the speaking task), and only that one; an announce message
primes the sink on arrival when nothing plays."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from edgespeak.audio.alsa import AlsaSink
from edgespeak.base.announcement import Announcement, Priority
from edgespeak.base.events import Event
from edgespeak.config import Settings
from edgespeak.inlets.homeassistant.state import NodeState
from edgespeak.inlets.mqtt.commands import Commands
from edgespeak.inlets.mqtt.link import Incoming
from edgespeak.scheduling.scheduler import Scheduler
from edgespeak.speaking.chimes import Chimes
from edgespeak.speaking.volume import VolumeStore


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


class NotedSink(AlsaSink):
    """A real sink (never opened here) that notes when it is primed, and what the scheduler
    had been handed by then."""

    def __init__(self, queued: list[str]) -> None:
        super().__init__("default")
        self.queued = queued
        self.primed_with: list[list[str]] = []

    def prime(self) -> None:
        self.primed_with.append(list(self.queued))
        super().prime()


def incoming(payload: bytes) -> Incoming:
    return Incoming("speech/node/announce", payload, time.monotonic(), None, False)


async def test_an_announce_message_primes_the_sink_before_it_is_read_only_when_idle(
    tmp_path: Path,
) -> None:
    """Bad before: the sink was primed once the lookup had found the phrase in the index, after
    the payload was parsed, rate-limited and queued (1-3 ms on a machine slow to wake). Now the
    message itself primes it when nothing plays or waits, before its payload is read: even one
    that then fails. Not while an announcement plays: that one is not cut short."""
    s = Speaking()
    queued: list[str] = []
    scheduler = Scheduler(
        s.speak, s.events.append, queue_max=10, ttl_s=60, dedup_window_s=0,
        on_internal_error=lambda a, e: None, prepare=lambda a: queued.append(a.id),
    )  # fmt: skip
    sink = NotedSink(queued)
    commands = Commands(Settings(), scheduler, Chimes(None), sink, VolumeStore(tmp_path),
                        NodeState(), s.events.append, lambda: None)  # fmt: skip
    running = asyncio.create_task(scheduler.run())
    try:
        assert scheduler.idle
        commands.announce(incoming(b"{not json"))
        assert sink.primed_with == [[]] and s.events[-1].state == "failed"
        commands.announce(incoming(b'{"id": "first", "text": "Front door."}'))
        assert sink.primed_with == [[], []] and queued == ["first"]  # primed, then queued
        assert await asyncio.wait_for(s.started.get(), 5) == "first"
        assert not scheduler.idle
        commands.announce(incoming(b'{"id": "second", "text": "Back door."}'))
        assert len(sink.primed_with) == 2  # "first" plays: no prime for the one behind it
    finally:
        s.release.set()
        scheduler.close("test over")
        await asyncio.wait_for(running, 5)
        sink.close()
    assert s.spoken == ["first"]
