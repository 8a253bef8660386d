"""MQTT routing of group playback: which announcements are group ones, and the plan, relay
and want topics (docs/protocols.md §16) → :class:`~edgespeak.group.speaker.GroupSpeaker`.

:func:`mark_group` tags an announcement that came on ``<prefix>/all/announce`` or
``<prefix>/group/<name>/announce`` with its target and key when the payload's ``sync`` is not
false and ``[group] sync`` is on; everything else plays as before.

:class:`Roster` answers the group speaker from the membership the clock's inlet keeps
(:mod:`edgespeak.inlets.mqtt.group`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Collection

from edgespeak.base.announcement import Announcement
from edgespeak.config import Settings
from edgespeak.group.members import Members
from edgespeak.group.plan import StopAt, group_key
from edgespeak.group.speaker import GroupSpeaker
from edgespeak.inlets.mqtt.link import Incoming, Route

log = logging.getLogger(__name__)
STOP_MARGIN_S = 0.05  # a group stop acts this long after the leader got it
STOP_WAIT_S = 1.0  # a member that hears of no stop from the leader stops on its own


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
    """The routes feeding ``speaker``: plans (and group stops), relays, wants, and the group
    stop topics.

    Group stop (docs/protocols.md §16.5): on ``<prefix>/all/stop`` or
    ``<prefix>/group/<g>/stop`` the target's leader publishes a stop at group time now +
    ``STOP_MARGIN_S``; every member (the leader too) calls ``stop`` then, less the fade, so
    the fade ends at that instant. A member whose clock is not synced stops on arrival; one
    that hears of no stop from the leader within ``STOP_WAIT_S`` stops on its own. With
    ``[group] sync`` off, or no other member known, ``stop`` is called at once, as before.
    """

    def __init__(
        self, settings: Settings, speaker: GroupSpeaker, stop: Callable[[Incoming], None]
    ) -> None:
        self._settings = settings
        self._speaker = speaker
        self._stop = stop
        self._want = speaker.topics.want(settings.node_id)
        self._waiting: dict[str, asyncio.TimerHandle] = {}  # target → own stop if none comes
        self._stopped: dict[str, float] = {}  # target → monotonic s of the leader's last stop
        speaker.on_stop = self._stop_at

    def routes(self) -> list[Route]:
        """Plan, relay, this node's want topic, and the ``all``/group stop topics (these must
        come before the node's own stop routes: the first matching route handles a
        message)."""
        t = self._speaker.topics
        prefix = self._settings.mqtt.prefix
        targets = ["all", *(f"group/{g}" for g in self._settings.mqtt.groups)]
        return [
            Route(t.plan, lambda m: self._speaker.on_plan(m.payload, m.received_at)),
            Route(t.audio_filter, self._audio),
            Route(self._want, lambda m: self._speaker.on_want(m.payload)),
        ] + [Route(f"{prefix}/{target}/stop", self._group_stop) for target in targets]

    def _group_stop(self, msg: Incoming) -> None:
        target = msg.topic.split("/")[-2]  # all, or the group's name
        leads = self._speaker.leads(target) if self._settings.group.sync else None
        if leads is None:
            self._stop(msg)
            return
        loop = asyncio.get_running_loop()
        if time.monotonic() - self._stopped.get(target, -math.inf) < STOP_WAIT_S:
            return  # the leader's stop came first
        if not leads:  # the leader says when; stop on our own if it does not
            self._waiting.setdefault(target, loop.call_later(STOP_WAIT_S, self._stop, msg))
            return
        stop = StopAt(self._settings.node_id, target, self._speaker.now_group() + STOP_MARGIN_S)
        self._speaker.send(self._speaker.topics.plan, stop.to_json())
        self._stop_at(stop)

    def _stop_at(self, stop: StopAt) -> None:
        """Call ``stop`` so that the fade ends at ``stop.at`` (group time)."""
        mine = stop.target == "all" or stop.target in self._settings.mqtt.groups
        if not mine or not self._settings.group.sync:
            return
        self._stopped[stop.target] = time.monotonic()
        waiting = self._waiting.pop(stop.target, None)
        if waiting is not None:
            waiting.cancel()
        msg = Incoming(f"{self._settings.mqtt.prefix}/sync/plan", stop.to_json(), 0.0, None, False)
        at = self._speaker.monotonic_at(stop.at)
        fade_s = self._settings.audio.fade_ms / 1000
        delay = 0.0 if at is None else max(0.0, at - fade_s - time.monotonic())
        asyncio.get_running_loop().call_later(delay, self._stop, msg)

    def _audio(self, msg: Incoming) -> None:
        self._speaker.on_audio(msg.topic.rsplit("/", 1)[-1], msg.payload, msg.received_at)
