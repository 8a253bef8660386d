"""The group's MQTT side: membership and the clock exchange (docs/protocols.md §15).

Subscribes to every node's retained ``<prefix>/+/availability`` and ``<prefix>/+/info``
(feeding :class:`~edgespeak.group.members.Members`, whose lowest live syncing node is the clock
reference), to this node's ``clock/ping`` and ``clock/pong`` (feeding
:class:`~edgespeak.group.sync.ClockSync`) and to ``clock/get``, answered on ``clock/status``
with :meth:`ClockSync.status` (what ``edgespeak doctor`` and the tests read). On every
connection it publishes this node's retained ``info``; when :meth:`GroupInlet.run` ends (the
daemon stopping) it clears it with an empty retained message, before the link says
``offline``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from edgespeak.config import Settings
from edgespeak.group.clock import GroupClock, LocalClock
from edgespeak.group.members import Members, info_payload
from edgespeak.group.sync import ClockSync, SendStamped
from edgespeak.inlets.mqtt.link import Incoming, Route

log = logging.getLogger(__name__)

Post = Callable[[str, bytes, bool], None]  # (topic, payload, retain): QoS 1 through the outbox


class GroupInlet:
    """This node's membership and clock exchange. ``post`` queues a QoS 1 message (retained
    when its third argument is True); ``send`` publishes a timestamped one (see
    :data:`~edgespeak.group.sync.SendStamped`)."""

    def __init__(self, settings: Settings, post: Post, send: SendStamped) -> None:
        g = settings.group
        self._prefix = settings.mqtt.prefix
        self._node = settings.node_id
        self._info = info_payload(settings.mqtt.groups, g.sync)
        self._post = post
        local = LocalClock(g.test_clock_offset_s, g.test_clock_drift_ppm)
        self.clock = GroupClock(
            self._node, local, interval_s=g.clock_interval_s, max_error_s=g.max_clock_error_ms / 1e3
        )
        self.members = Members()
        self.sync = ClockSync(self.clock, self._prefix, send)
        self.syncing = g.sync  # an opted-out node tracks members but has no clock exchange
        self.on_change: Callable[[], None] | None = None  # the members changed (group speaker)

    def _own(self, leaf: str) -> str:
        return f"{self._prefix}/{self._node}/{leaf}"

    def routes(self) -> list[Route]:
        """The routes to add to the broker link."""
        p = self._prefix
        routes = [
            Route(f"{p}/+/availability", self._availability, retained=True),
            Route(f"{p}/+/info", self._on_info, retained=True),
            Route(self._own("clock/get"), self._get),
        ]
        if self.syncing:
            routes += [Route(self._own("clock/ping"), self._ping)]
            routes += [Route(self._own("clock/pong"), self._pong)]
        return routes

    def connected(self) -> None:
        """Call after every (re)connection, before its messages are dispatched: publish this
        node's info, resync the clock, and read the membership afresh from the retained
        messages the new subscription brings (a restarted broker may have lost a node that
        left meanwhile; the reference is followed again as they arrive)."""
        self._post(self._own("info"), self._info, True)
        self.members.clear()
        self.sync.reconnected()

    async def run(self) -> None:
        """Ping the reference until cancelled, then clear this node's retained info."""
        try:
            if self.syncing:
                await self.sync.run()
            else:
                await asyncio.Event().wait()  # nothing to send: wait to be cancelled
        finally:
            self._post(self._own("info"), b"", True)

    def _node_of(self, msg: Incoming) -> str:
        return msg.topic[len(self._prefix) + 1 :].split("/", 1)[0]

    def _availability(self, msg: Incoming) -> None:
        if self.members.availability(self._node_of(msg), msg.payload):
            self._follow()

    def _on_info(self, msg: Incoming) -> None:
        if self.members.info(self._node_of(msg), msg.payload):
            self._follow()

    def _follow(self) -> None:
        if self.on_change is not None:
            self.on_change()
        if self.syncing:
            self.sync.follow(self.members.reference())

    def _ping(self, msg: Incoming) -> None:
        self.sync.on_ping(msg.payload, msg.received_at)

    def _pong(self, msg: Incoming) -> None:
        self.sync.on_pong(msg.payload, msg.received_at)

    def _get(self, msg: Incoming) -> None:
        status = self.sync.status() | {"syncing": self.syncing, "live": self.members.live()}
        if not self.syncing:
            status |= {"synced": False, "reason": "[group] sync is false on this node"}
        self._post(self._own("clock/status"), json.dumps(status).encode(), False)
