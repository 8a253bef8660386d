"""What the leader and follower paths of a group announcement share: this node's parts, its
topics, and the events they publish (with the ``group`` field, docs/protocols.md §16.6)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from edgespeak.audio.alsa import AlsaSink
from edgespeak.audio.playback import Playback, Utterance
from edgespeak.base.announcement import Announcement
from edgespeak.base.events import Event, Source
from edgespeak.config import Settings
from edgespeak.group.clock import GroupClock
from edgespeak.group.inbox import RelayInbox
from edgespeak.group.output import start_offset_s
from edgespeak.group.plan import PlanBook
from edgespeak.sources.cache import PhraseCache
from edgespeak.sources.fallback import Fallback
from edgespeak.sources.synthesis import Synthesizer

log = logging.getLogger("edgespeak.group")
Send = Callable[[str, bytes, int], None]  # (topic, payload, qos): the daemon's publisher
Publish = Callable[[Event], None]
_TOPIC_SAFE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class Roster(Protocol):
    """Who is in the group, from the retained availability and info (group/members.py)."""

    def members(self, target: str) -> Collection[str]:
        """Node ids of the live syncing members of ``target`` (``all`` or a group name)."""
        ...

    def is_live(self, node_id: str) -> bool:
        """Whether ``node_id``'s retained availability is ``online``."""
        ...


def topic_key(key: str) -> str:
    """``key`` as one MQTT topic level: itself when made of ``[A-Za-z0-9_.:-]`` (at most 64),
    else the first 16 hex digits of its sha256 (an id may hold ``/``, ``+`` or ``#``)."""
    return key if _TOPIC_SAFE.fullmatch(key) else hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SyncTopics:
    """The group playback topics under ``prefix`` (docs/protocols.md §16.1)."""

    prefix: str

    @property
    def plan(self) -> str:
        """Plans and group stops, JSON, QoS 1, every node subscribed."""
        return f"{self.prefix}/sync/plan"

    def audio(self, key: str) -> str:
        """The relay of the announcement ``key``, binary, QoS 1."""
        return f"{self.prefix}/sync/audio/{topic_key(key)}"

    @property
    def audio_filter(self) -> str:
        """Every relay (subscribe)."""
        return f"{self.prefix}/sync/audio/+"

    def want(self, node_id: str) -> str:
        """A follower lacking a cached phrase asks ``node_id`` (the leader) to relay it."""
        return f"{self.prefix}/{node_id}/sync/want"


@dataclass
class Node:
    """This node's parts, as the group paths use them. ``synth``: a synthesizer without a
    cache (a group phrase is cached as the relay carried it, :mod:`edgespeak.group.lead`)."""

    settings: Settings
    node_id: str
    topics: SyncTopics
    synth: Synthesizer
    endpoint: str
    sink: AlsaSink
    cache: PhraseCache | None
    fallback: Fallback | None
    publish: Publish
    send: Send
    clock: GroupClock
    roster: Roster
    plans: PlanBook
    inbox: RelayInbox

    def mono(self, group_t: float) -> float | None:
        """The ``time.monotonic()`` instant of group time ``group_t`` (s), or None when the
        clock is not synced (the node then plays at once)."""
        if not self.clock.synced:
            return None
        return self.clock.local.to_monotonic(self.clock.to_local(group_t))

    def report(
        self, key: str, leader: str, playback: Playback | None, start_at: float | None
    ) -> dict[str, object]:
        """The ``group`` field of a ``finished``/``failed`` event. ``start_at``: the instant it
        was placed at, None when the node played it at once (its clock was not synced when it
        decided: :meth:`mono`), which is what ``synced`` reports; the clock may have changed
        since, so its state now does not decide it."""
        offset = start_offset_s(playback, start_at) if playback is not None else None
        error = self.clock.error_s
        synced = start_at is not None
        body: dict[str, object] = {
            "key": key,
            "leader": leader,
            "start_offset_ms": None if offset is None else round(offset * 1000, 1),
            "clock_error_ms": round(error * 1000, 3) if math.isfinite(error) else None,
            "synced": synced,
        }
        if not synced and playback is not None:  # it played, at once: why
            body["reason"] = self.clock.reason or "the clock was not synced when it started"
        elif not synced and self.clock.reason is not None:
            body["reason"] = self.clock.reason
        return {k: v for k, v in body.items() if v is not None}

    def playing(self, ann: Announcement, source: Source) -> Callable[[Utterance], None]:
        """An ``on_begin`` for :func:`~edgespeak.group.output.play_at` that publishes
        ``playing`` once the first frame is handed to ALSA."""

        def begun(utt: Utterance) -> None:
            utt.first_frame.add_done_callback(lambda f: self._playing(ann, source, f))

        return begun

    def _playing(self, ann: Announcement, source: Source, first: asyncio.Future[float]) -> None:
        if first.cancelled() or first.exception() is not None:
            return
        self.publish(Event(ann.id, "playing", source=source, ttfa_ms=ttfa_ms(ann, first.result())))

    def finished(
        self, ann: Announcement, source: Source, playback: Playback, group: dict[str, object],
        reason: str | None = None,
    ) -> Event:  # fmt: skip
        """Log and publish ``finished`` (``reason``: why the fallback spoke); returns it."""
        first = playback.first_frame_at
        event = Event(
            ann.id, "finished", source=source,
            ttfa_ms=ttfa_ms(ann, first) if first is not None else None,
            duration_s=round(playback.duration_s, 3), underruns=playback.underruns, group=group,
            reason=reason,
        )  # fmt: skip
        log.info(
            "spoke group announcement %s (key %s) from %s: start offset %s ms",
            ann.id, group.get("key"), source, group.get("start_offset_ms"),
        )  # fmt: skip
        self.publish(event)
        return event

    def failed(
        self, ann: Announcement, error: str, source: Source | None, group: dict[str, object]
    ) -> Event:
        """Log and publish ``failed``; returns it."""
        log.error("group announcement %s failed: %s", ann.id, error)
        event = Event(ann.id, "failed", source=source, error=error, group=group)
        self.publish(event)
        return event


def ttfa_ms(ann: Announcement, first_frame_at: float) -> float:
    """Milliseconds from MQTT receipt to the first frame handed to ALSA."""
    return round((first_frame_at - ann.received_at) * 1000, 1)


def gain(ann: Announcement) -> float:
    """The announcement's own volume, linear 0.0-1.0."""
    return 1.0 if ann.volume is None else ann.volume


async def store(
    node: Node, key: str, pcm: bytes, rate_hz: int, text: str, voice: str | None
) -> None:
    """Write ``pcm`` (s16le mono at ``rate_hz`` Hz) to the phrase cache as entry ``key``, off
    the event loop; a cache failure is logged, never raised."""
    cache = node.cache
    if cache is None or not pcm:
        return

    def write() -> None:
        writer = cache.writer(key, rate_hz, text=text, voice=voice)
        if writer is None:
            return
        try:
            writer.write(pcm)
            writer.commit()
        except OSError as exc:
            log.warning("phrase cache: could not store the group's phrase %s: %s", key[:12], exc)

    await asyncio.to_thread(write)
