"""The MQTT side of harness.rooms: one client that publishes announcements to ``all`` or a
group, collects every node's events and availability with their arrival times, counts the bytes
of every message published under the prefix, and reads Mosquitto's ``$SYS/broker/bytes/…``
counters. It reconnects when the broker restarts (what it saw is kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from edgespeak.base.events import TERMINAL
from harness.rooms import PREFIX, Rooms, Sent

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
SYS_TOPICS = ("$SYS/broker/bytes/received", "$SYS/broker/bytes/sent")
ASK_S = 0.5  # between two clock/status questions while waiting for the clocks
RECONNECT_S = 0.2  # between attempts to reach a restarting broker (a back-off, not a wait)


@dataclass
class Seen:
    """One message from a node: ``at`` its arrival (``time.monotonic()`` s), ``node``, and
    ``event`` (its JSON event; for availability ``{"id": "availability", "state": ...}``)."""

    at: float
    node: str
    event: dict[str, Any]


@dataclass
class Ears:
    """See the module docstring. ``seen``: every node message in arrival order; ``online``:
    node → its last availability was ``online`` (reset when the connection is lost, so waiting
    for it after a broker restart waits for the fresh one); ``bytes``: topic + payload bytes of
    every message under the prefix received; ``topics``: messages received per topic; ``sys``:
    the latest $SYS counter values; ``clocks``: node → its last ``clock/status`` answer."""

    port: int
    seen: list[Seen] = field(default_factory=list)
    online: dict[str, bool] = field(default_factory=dict)
    bytes: int = 0
    sys: dict[str, int] = field(default_factory=dict)
    topics: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    clocks: dict[str, dict[str, Any]] = field(default_factory=dict)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    client: aiomqtt.Client | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _count: int = 0

    async def run(self) -> None:
        """Connect, subscribe and collect; reconnect whenever the connection is lost."""
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, socket_options=NODELAY) as client:
                    await client.subscribe(f"{PREFIX}/#", qos=1)
                    for topic in SYS_TOPICS:
                        await client.subscribe(topic, qos=0)
                    self.client = client
                    async with self._changed:
                        self.connections += 1
                        self.connected.set()
                        self._changed.notify_all()
                    async for message in client.messages:
                        await self._take(str(message.topic), message.payload)
            except aiomqtt.MqttError:
                pass
            self.client = None
            self.connected.clear()
            async with self._changed:
                self.online.clear()
                self._changed.notify_all()
            await asyncio.sleep(RECONNECT_S)

    async def _take(self, topic: str, payload: Any) -> None:
        data = payload if isinstance(payload, bytes) else str(payload).encode()
        async with self._changed:
            if topic.startswith("$SYS/"):
                with contextlib.suppress(ValueError):
                    self.sys[topic] = int(data)
                self._changed.notify_all()
                return
            self.bytes += len(topic) + len(data)
            self.topics[topic] += 1
            parts = topic.split("/")
            if len(parts) == 3 and parts[2] == "availability":
                self.online[parts[1]] = data == b"online"
                self.seen.append(Seen(time.monotonic(), parts[1], {"id": "availability"}))
                self.seen[-1].event["state"] = data.decode(errors="replace")
            elif parts[2:] == ["clock", "status"]:
                with contextlib.suppress(ValueError):
                    self.clocks[parts[1]] = json.loads(data)
            elif len(parts) == 3 and parts[2] == "event":
                with contextlib.suppress(ValueError):
                    self.seen.append(Seen(time.monotonic(), parts[1], json.loads(data)))
            self._changed.notify_all()

    async def until(self, done: Callable[[], bool], timeout_s: float = 60.0) -> None:
        """Return once ``done()`` is true (checked at every message). Raises TimeoutError."""
        async with asyncio.timeout(timeout_s), self._changed:
            while not done():
                await self._changed.wait()

    async def wait_online(self, nodes: Sequence[str], timeout_s: float = 30.0) -> None:
        """Return once every node in ``nodes`` is ``online`` (and this client connected)."""
        await self.until(
            lambda: self.connected.is_set() and all(self.online.get(n) for n in nodes),
            timeout_s,
        )

    async def restart_broker(self, rooms: Rooms, timeout_s: float = 30.0) -> None:
        """Restart ``rooms``' broker (same port, nothing retained kept) and return once this
        client is connected again; the nodes' availability is then the fresh one (wait with
        :meth:`wait_online`). Raises TimeoutError."""
        before = self.connections
        await asyncio.to_thread(rooms.broker.restart)
        await self.until(lambda: self.connections > before, timeout_s)

    async def wait_synced(self, nodes: Sequence[str], timeout_s: float = 40.0) -> None:
        """Return once every node in ``nodes`` answers ``<prefix>/<node>/clock/get`` with a
        ``clock/status`` saying ``synced`` (docs/protocols.md §15; asked again every
        ``ASK_S``). Raises TimeoutError with each node's last answer."""
        self.clocks.clear()
        deadline = time.monotonic() + timeout_s
        while not all(self.clocks.get(n, {}).get("synced") for n in nodes):
            if time.monotonic() > deadline:
                answers = {n: self.clocks.get(n) for n in nodes}
                raise TimeoutError(f"clocks not synced after {timeout_s:g} s: {answers}")
            assert self.client is not None, "not connected"
            for node in nodes:
                await self.client.publish(f"{PREFIX}/{node}/clock/get", b"", qos=1)
            with contextlib.suppress(TimeoutError):  # polls the real condition, bounded
                await self.until(lambda: all(n in self.clocks for n in nodes), ASK_S)
            if not all(self.clocks.get(n, {}).get("synced") for n in nodes):
                await asyncio.sleep(ASK_S)  # before asking again
                self.clocks.clear()

    async def wait_sys(self, timeout_s: float = 10.0) -> dict[str, int]:
        """The next fresh $SYS byte counters (both), as Mosquitto publishes them."""
        self.sys.clear()
        await self.until(lambda: all(t in self.sys for t in SYS_TOPICS), timeout_s)
        return dict(self.sys)

    async def announce(
        self, rooms: Rooms, text: str, target: str = "all", nodes: Sequence[str] | None = None,
        ann_id: str | None = None, **fields: Any,
    ) -> Sent:  # fmt: skip
        """Publish ``text`` (QoS 1) to ``<prefix>/all/announce`` (``target`` "all") or
        ``<prefix>/group/<target>/announce``; ``nodes`` expected to play it (default: every
        node of ``rooms`` whose daemon runs and that is in the target). Returns its
        :class:`Sent`, stamped just before the publish."""
        self._count += 1
        ann_id = ann_id or f"ann-{self._count}"
        topic = f"{PREFIX}/{'all' if target == 'all' else f'group/{target}'}/announce"
        if nodes is None:
            nodes = [
                n.node_id
                for n in rooms.nodes.values()
                if n.running and (target == "all" or target in n.groups)
            ]
        payload = json.dumps({"text": text, "id": ann_id, **fields})
        assert self.client is not None, "not connected"
        sent = Sent(ann_id, text, topic, 0.0, tuple(nodes), rooms.server_sessions())
        before = self.bytes
        sent.sent = time.monotonic()
        await self.client.publish(topic, payload, qos=1)
        sent.bytes = -before  # completed by wait_done
        return sent

    def terminal(self, sent: Sent, node: str) -> dict[str, Any] | None:
        """``node``'s terminal event of ``sent`` seen so far, or None."""
        for seen in self.seen:
            if (
                seen.node == node
                and seen.at >= sent.sent
                and seen.event.get("id") == sent.ann_id
                and seen.event.get("state") in TERMINAL
            ):
                return seen.event
        return None

    def states(self, sent: Sent, node: str) -> list[str]:
        """Every state ``node`` reported for ``sent`` so far, in order."""
        return [
            s.event["state"]
            for s in self.seen
            if s.node == node and s.at >= sent.sent and s.event.get("id") == sent.ann_id
        ]

    async def wait_state(self, sent: Sent, node: str, state: str, timeout_s: float = 60) -> float:
        """When ``node`` reported ``state`` for ``sent`` (arrival, monotonic s)."""

        def found() -> float | None:
            for seen in self.seen:
                if seen.node == node and seen.at >= sent.sent:
                    if seen.event.get("id") == sent.ann_id and seen.event["state"] == state:
                        return seen.at
            return None

        await self.until(lambda: found() is not None, timeout_s)
        at = found()
        assert at is not None
        return at

    async def wait_done(self, rooms: Rooms, sent: Sent, timeout_s: float = 60.0) -> Sent:
        """Wait for every expected node's terminal event of ``sent``; fill in its events,
        ``done_at``, the server sessions and the bytes since its publish. Raises TimeoutError
        naming the nodes that did not end."""
        try:
            await self.until(lambda: all(self.terminal(sent, n) for n in sent.nodes), timeout_s)
        except TimeoutError:
            missing = [n for n in sent.nodes if self.terminal(sent, n) is None]
            raise TimeoutError(f"{sent.ann_id}: no end from {missing} in {timeout_s:g} s") from None
        sent.events = {n: e for n in sent.nodes if (e := self.terminal(sent, n)) is not None}
        sent.done_at = time.monotonic()
        sent.sessions = rooms.server_sessions() - sent.sessions_before
        sent.bytes += self.bytes
        return sent

    async def say(
        self, rooms: Rooms, text: str, target: str = "all", timeout_s: float = 60.0, **fields: Any
    ) -> Sent:
        """:meth:`announce`, then :meth:`wait_done`."""
        sent = await self.announce(rooms, text, target, **fields)
        return await self.wait_done(rooms, sent, timeout_s)


@contextlib.asynccontextmanager
async def listening(port: int) -> AsyncIterator[Ears]:
    """:class:`Ears` on the broker at ``port``, connected, collecting while inside."""
    ears = Ears(port)
    task = asyncio.create_task(ears.run())
    try:
        async with asyncio.timeout(20):
            await ears.connected.wait()
        yield ears
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
