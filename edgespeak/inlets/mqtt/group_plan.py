"""MQTT routing of group playback: which announcements are group ones, and the plan, relay
and want topics (docs/protocols.md §16) → :class:`~edgespeak.group.speaker.GroupSpeaker`.

:func:`mark_group` tags an announcement that came on ``<prefix>/all/announce`` or
``<prefix>/group/<name>/announce`` with its target and key when the payload's ``sync`` is not
false and ``[group] sync`` is on; everything else plays as before.

:class:`Roster` answers the group speaker from the membership the clock's inlet keeps
(:mod:`edgespeak.inlets.mqtt.group`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection

from edgespeak.base.announcement import Announcement
from edgespeak.config import Settings
from edgespeak.group.members import Members
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


class Roster:
    """The group's membership (:class:`~edgespeak.group.members.Members`) as the group speaker
    asks it (:class:`~edgespeak.group.node.Roster`)."""

    def __init__(self, members: Members) -> None:
        self._members = members

    def members(self, target: str) -> Collection[str]:
        """The live syncing members of ``target`` (``all`` or a group name)."""
        return self._members.members_of(target)

    def is_live(self, node_id: str) -> bool:
        """Whether ``node_id``'s availability reads ``online``."""
        return node_id in self._members.live()


class GroupRoutes:
    """The routes feeding ``speaker``: plans (and group stops), relays, wants."""

    def __init__(self, settings: Settings, speaker: GroupSpeaker) -> None:
        self._speaker = speaker
        self._want = speaker.topics.want(settings.node_id)

    def routes(self) -> list[Route]:
        """Plan, relay and this node's want topic."""
        t = self._speaker.topics
        return [
            Route(t.plan, lambda m: self._speaker.on_plan(m.payload, m.received_at)),
            Route(t.audio_filter, self._audio),
            Route(self._want, lambda m: self._speaker.on_want(m.payload)),
        ]

    def _audio(self, msg: Incoming) -> None:
        self._speaker.on_audio(msg.topic.rsplit("/", 1)[-1], msg.payload, msg.received_at)
