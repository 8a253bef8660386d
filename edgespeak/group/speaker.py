"""The group speaker: what the scheduler calls to speak, group announcement or not.

A group announcement (``Announcement.group`` set by the MQTT inlet: it came on ``all`` or a
group topic, its payload's ``sync`` is not false and ``[group] sync`` is on here) is led
(:mod:`edgespeak.group.lead`) when this node is the lowest live syncing member of its target,
else followed (:mod:`edgespeak.group.follow`). Anything else goes to the
:class:`~edgespeak.speaking.speaker.Speaker` as before, and so does a group announcement on a
node that knows no other live member of its target, or one with a ``chime`` (chimes are not
placed at the group's instant yet).

The MQTT inlet (:mod:`edgespeak.inlets.mqtt.group_plan`) feeds :meth:`GroupSpeaker.on_plan`,
:meth:`~GroupSpeaker.on_audio`, :meth:`~GroupSpeaker.on_want` and
:meth:`~GroupSpeaker.members_changed`; everything goes out through the daemon's ``send``.
"""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from edgespeak.audio.alsa import AlsaSink
from edgespeak.base.announcement import Announcement
from edgespeak.base.events import Event
from edgespeak.config import Settings
from edgespeak.group.clock import GroupClock
from edgespeak.group.inbox import RelayInbox
from edgespeak.group.node import Node, Publish, Roster, Send, SyncTopics, log
from edgespeak.group.plan import Plan, PlanBook, StopAt, choose_leader, parse_sync_message
from edgespeak.sources.cache import PhraseCache
from edgespeak.sources.fallback import Fallback
from edgespeak.sources.synthesis import Synthesizer
from edgespeak.speaking.speaker import Speaker

if TYPE_CHECKING:  # imported on first use: see GroupSpeaker._lead
    from edgespeak.group.lead import Leading


class GroupSpeaker:
    """Speaks announcements: group ones in step with the group, the rest through ``speaker``.

    ``synth``: a synthesizer without a cache, for the group's one session per phrase.
    ``send``: publishes (topic, payload, QoS) through the daemon's broker link.
    """

    def __init__(
        self,
        settings: Settings,
        speaker: Speaker,
        synth: Synthesizer,
        endpoint: str,
        sink: AlsaSink,
        cache: PhraseCache | None,
        fallback: Fallback | None,
        publish: Publish,
        send: Send,
        clock: GroupClock,
        roster: Roster,
    ) -> None:
        self._speaker = speaker
        self.topics = SyncTopics(settings.mqtt.prefix)
        self._node = Node(
            settings, settings.node_id, self.topics, synth, endpoint, sink, cache, fallback,
            publish, send, clock, roster, PlanBook(), RelayInbox(),
        )  # fmt: skip
        self._leading: Leading | None = None  # made on the first lead: see _lead
        self._warming = False  # the group paths are being (or were) imported: members_changed
        self.on_stop: Callable[[StopAt], None] | None = None  # a group stop came (the inlet)

    async def speak(self, ann: Announcement) -> Event:
        """Play ``ann``; returns its final event (``finished`` or ``failed``), published.
        Never raises for a failure of the provider, the device, the relay or the group;
        cancelled (interrupted, stopped), it fades out and re-raises."""
        if ann.group is None or ann.group_key is None or self._alone(ann.group):
            return await self._speaker.speak(ann)
        if ann.chime is not None:  # not placed at the group's instant yet: as before
            log.info("%s has a chime: played on this node alone, not in step", ann.id)
            return await self._speaker.speak(ann)
        from edgespeak.group.follow import follow

        if self._leader(ann.group) == self._node.node_id:
            return await self._lead(ann)
        return await follow(self._node, ann, self._lead)

    def prepare(self, ann: Announcement) -> None:
        """``ann`` is queued to play next: the speaker gets its audio ready when this node will
        play it as a lone node does (not in a group, or no other member of it live); a group
        announcement waits for its plan. Never raises."""
        if ann.group is None or self._alone(ann.group):
            self._speaker.prepare(ann)

    def _alone(self, target: str) -> bool:
        """No other live syncing member of ``target`` is known: play as a lone node does."""
        return not any(m != self._node.node_id for m in self._node.roster.members(target))

    def leads(self, target: str) -> bool | None:
        """Whether this node leads ``target`` now; None when it knows no other member of it
        (a group stop then acts at once, as before)."""
        if self._alone(target):
            return None
        return self._leader(target) == self._node.node_id

    def _leader(self, target: str) -> str:
        """The leader of an announcement to ``target`` (:func:`~edgespeak.group.plan.choose_leader`
        of its live syncing members; this node when none is known)."""
        return choose_leader(self._node.roster.members(target)) or self._node.node_id

    def now_group(self) -> float:
        """Group time now (s)."""
        return self._node.clock.now_group()

    def monotonic_at(self, group_t: float) -> float | None:
        """The ``time.monotonic()`` instant of group time ``group_t`` (s); None when the clock
        is not synced."""
        return self._node.mono(group_t)

    def send(self, topic: str, payload: bytes) -> None:
        """Publish ``payload`` on ``topic`` (QoS 1) through the daemon's link."""
        self._node.send(topic, payload, 1)

    async def _lead(self, ann: Announcement) -> Event:
        # Imported on a node's first group announcement with company: the relay's Opus codec
        # and resampler cost memory a lone node never needs (docs/performance.md, Footprint).
        from edgespeak.group.lead import Leading, lead

        if self._leading is None:
            self._leading = Leading()
        return await lead(self._node, self._leading, ann)

    def on_plan(self, payload: bytes, arrived: float) -> None:
        """A message on ``<prefix>/sync/plan`` (``arrived``: monotonic seconds). A bad one is
        logged and dropped."""
        try:
            message = parse_sync_message(payload)
        except ValueError as exc:
            log.warning("ignoring a bad group plan: %s", exc)
            return
        if isinstance(message, StopAt):
            log.info("group stop from %s at group time %.3f", message.leader, message.at)
            if self.on_stop is not None and message.leader != self._node.node_id:
                self.on_stop(message)  # our own was acted on when sent
            return
        self._plan(message, arrived)

    def _plan(self, plan: Plan, arrived: float) -> None:
        me = self._node.node_id
        if plan.leader == me:
            return  # our own, back from the broker
        if plan.leader < me and self._leading is not None:
            self._leading.outranked(plan.key)
        standing = self._node.plans.add(plan, arrived)
        if standing is not plan:
            log.info("plan for %s from %s ignored: %s leads it", plan.key, plan.leader,
                     standing.leader)  # fmt: skip

    def on_audio(self, topic_key: str, payload: bytes, arrived: float) -> None:
        """A relay message for ``topic_key`` (the last level of its topic)."""
        leading = self._leading
        if leading is not None and (topic_key in leading.relays or topic_key in leading.offers):
            return  # our own relay, back from the broker
        self._node.inbox.add(topic_key, payload, arrived)

    def on_want(self, payload: bytes) -> None:
        """A follower lacks a cached phrase: ``payload`` is JSON ``{"key": …}``. A bad one is
        logged and dropped."""
        try:
            key = json.loads(payload)["key"]
        except (ValueError, TypeError, KeyError):
            key = None
        if not isinstance(key, str):
            log.warning("ignoring a bad want message: %r", payload[:100])
            return
        if self._leading is not None:  # else this node never led: it has nothing to offer
            self._leading.want(self._node, key)

    def members_changed(self) -> None:
        """The live members changed: followers waiting on a plan or a relay look again. The
        first time another node is live, the leader's and follower's code (the relay's Opus
        codec, numpy and soxr: tens of ms to import, more on a Pi) is imported in a thread, so
        the first relayed phrase does not wait for it on the event loop and start late."""
        self._node.plans.wake()
        self._node.inbox.wake()
        if not self._warming and not self._alone("all"):
            self._warming = True
            threading.Thread(target=_import_group_paths, name="edgespeak-group-import").start()


def _import_group_paths() -> None:
    """Import what leading and following need (a thread's work: :meth:`members_changed`)."""
    for name in ("edgespeak.group.lead", "edgespeak.group.follow", "numpy", "soxr"):
        importlib.import_module(name)
