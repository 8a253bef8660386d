"""MQTT routing of group playback: which announcements are group ones, and the plan, relay
and want topics (docs/protocols.md §16) → :class:`~edgespeak.group.speaker.GroupSpeaker`.

:func:`mark_group` tags an announcement that came on ``<prefix>/all/announce`` or
``<prefix>/group/<name>/announce`` with its target and key when the payload's ``sync`` is not
false and ``[group] sync`` is on; everything else plays as before.

:class:`LiveNodes` is a stand-in for the group's membership (``group/members.py``, branch
``clock``): every node whose retained availability is ``online`` counts as a member of every
target, and the lowest is the clock's reference. It is the one place to replace.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection

from edgespeak.base.announcement import Announcement
from edgespeak.config import Settings
from edgespeak.group.clock import GroupClock
from edgespeak.group.plan import group_key
from edgespeak.group.speaker import GroupSpeaker
from edgespeak.inlets.mqtt.link import Incoming, Route

log = logging.getLogger(__name__)


def group_target(topic: str, prefix: str) -> str | None:
    """``all`` or the group's name when ``topic`` is ``<prefix>/all/announce`` or
    ``<prefix>/group/<name>/announce``; else None."""
    levels = topic.split("/")
    stem = prefix.split("/")
    if levels[: len(stem)] != stem or levels[-1] != "announce":
        return None
    rest = levels[len(stem) : -1]
    if rest == ["all"]:
        return "all"
    if len(rest) == 2 and rest[0] == "group" and rest[1]:
        return rest[1]
    return None


def mark_group(ann: Announcement, msg: Incoming, settings: Settings) -> Announcement:
    """``ann`` with ``group`` and ``group_key`` set when it is a group announcement (see the
    module docstring); else ``ann`` unchanged."""
    target = group_target(msg.topic, settings.mqtt.prefix)
    if target is None or ann.sync is False or not settings.group.sync:
        return ann
    key = group_key(ann.id, ann.id_given, msg.topic, msg.payload)
    return dataclasses.replace(ann, group=target, group_key=key)


class LiveNodes:
    """Stand-in membership: the node ids whose retained availability is ``online``."""

    def __init__(self, clock: GroupClock) -> None:
        self._clock = clock
        self._live: set[str] = set()
        self.on_change: Callable[[], None] | None = None

    def members(self, target: str) -> Collection[str]:
        """Every live node (the stand-in knows neither groups nor ``sync``)."""
        return sorted(self._live)

    def is_live(self, node_id: str) -> bool:
        """Whether ``node_id`` said ``online`` last."""
        return node_id in self._live

    def availability(self, node_id: str, online: bool) -> None:
        """Record ``node_id``'s availability; the lowest live node is the clock's reference."""
        before = set(self._live)
        (self._live.add if online else self._live.discard)(node_id)
        if self._live != before:
            self._clock.set_reference(min(self._live, default=None))
            if self.on_change is not None:
                self.on_change()


class GroupRoutes:
    """The routes feeding ``speaker`` (and the stand-in ``live`` membership)."""

    def __init__(self, settings: Settings, speaker: GroupSpeaker, live: LiveNodes) -> None:
        self._prefix = settings.mqtt.prefix
        self._speaker = speaker
        self._live = live
        self._want = speaker.topics.want(settings.node_id)
        live.on_change = speaker.members_changed

    def routes(self) -> list[Route]:
        """Plan, relay, want, and every node's availability (retained)."""
        t = self._speaker.topics
        return [
            Route(t.plan, lambda m: self._speaker.on_plan(m.payload, m.received_at)),
            Route(t.audio_filter, self._audio),
            Route(self._want, lambda m: self._speaker.on_want(m.payload)),
            Route(f"{self._prefix}/+/availability", self._availability, retained=True),
        ]

    def _audio(self, msg: Incoming) -> None:
        self._speaker.on_audio(msg.topic.rsplit("/", 1)[-1], msg.payload, msg.received_at)

    def _availability(self, msg: Incoming) -> None:
        node_id = msg.topic[len(self._prefix) + 1 :].split("/", 1)[0]
        self._live.availability(node_id, msg.payload == b"online")
