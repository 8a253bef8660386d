"""Fault injection: the broker is SIGKILLed and restarted while 100 QoS 1 announcements are
being published. Each must be spoken exactly once: counted in the events and, byte for byte,
in what the daemon handed to ALSA.

What makes this hold, all real: Mosquitto with persistence saved after every change (by
default it saves only on a clean stop and every 30 minutes), the daemon's persistent session
(QoS 1, clean start off), a publisher that sends again what the broker did not acknowledge
(as any QoS 1 client does after a reconnect), and the daemon ignoring an ``id`` it has already
seen (a message sent again, or redelivered from the broker's saved session).

Where the kill lands. Mosquitto acknowledges a publication before the save that records it,
and a client library (paho, under aiomqtt) that notices the dead connection on a write closes
its socket without reading what was still buffered. Killed in that instant, the broker loses a
message it has acknowledged, whoever the subscriber is (measured here, killing it right after
the 40th acknowledgement: ``item-40`` lost in 4 of 9 runs; with ``max_inflight_messages 0``
still in 1 of 12). So the broker is killed
at a moment when every acknowledged announcement has reached the daemon (its ``received``
event seen) and the next one is in flight to the frozen broker, unacknowledged: the publisher
must send it again. docs/reliability.md states the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, cast

import aiomqtt

from edgespeak.base.events import Event
from edgespeak.config import Settings
from edgespeak.inlets.mqtt.link import OUTBOX_MESSAGES, MqttLink, Route, outbox_capacity
from harness.stack import STARTUP_S, Mosquitto
from tests.conftest import Stack, Watcher, daemon_process, logged
from tests.helpers import server_audio
from tests.test_scheduler import HOLD, held_provider

COUNT = 100
KILL_AFTER = 40  # acknowledged publications before the broker is killed
TOPIC = "edgespeak/testnode/announce"
RETRY_S = 0.05  # between attempts to reach a broker that is down
STOP_S = 15.0  # a cancelled link stops within aiomqtt's 10 s disconnect timeout
ACK_TIMEOUT_S = 1.0  # a publication not acknowledged by then is sent again on a new connection
DURABLE_BROKER = (
    "autosave_on_changes true",  # save after every change, not only on a clean stop
    "autosave_interval 1",
    "queue_qos0_messages true",  # the watcher's QoS 0 events wait for it while it reconnects
)
BURST_ENV = {  # let 100 announcements in at once and keep them until their turn
    "EDGESPEAK_LIMITS__RATE": "1000/second",
    "EDGESPEAK_DAEMON__QUEUE_MAX": "200",
    "EDGESPEAK_DAEMON__TTL_S": "600",
}


class Publisher:
    """Publishes ``payloads`` in order at QoS 1, each until the broker acknowledged it: one
    cut off by a lost connection is sent again on the next connection (so the broker may get
    it twice). Holds back payload ``hold`` (0-based) until :attr:`go` is set; :attr:`held`
    is set once it got there, :attr:`sending` once it is being published. ``acked``: how
    many are acknowledged; ``resent``: how many went out again."""

    def __init__(self, port: int, payloads: list[str], *, hold: int) -> None:
        self._port = port
        self._payloads = payloads
        self._hold = hold
        self.held = asyncio.Event()
        self.go = asyncio.Event()
        self.sending = asyncio.Event()
        self.acked = 0
        self.resent = 0

    async def run(self) -> None:
        while self.acked < len(self._payloads):
            try:
                async with aiomqtt.Client("127.0.0.1", self._port, timeout=ACK_TIMEOUT_S) as pub:
                    while self.acked < len(self._payloads):
                        if self.acked == self._hold:
                            self.held.set()
                            await self.go.wait()
                            self.sending.set()
                        payload = self._payloads[self.acked]
                        await pub.publish(TOPIC, payload, qos=1, timeout=ACK_TIMEOUT_S)
                        self.acked += 1
            except aiomqtt.MqttError:
                self.resent += 1  # it may have reached the broker: now it may arrive twice
                await asyncio.sleep(RETRY_S)  # the broker is down: try again shortly


@contextlib.asynccontextmanager
async def surviving_watcher(port: int) -> AsyncIterator[Watcher]:
    """A :class:`Watcher` that outlives broker restarts: a persistent session (fixed client
    id, clean session off) so what is published while it reconnects waits for it, and a
    reconnect loop. It subscribes at QoS 0, so it never writes an acknowledgement: a client
    that fails such a write closes its socket with events unread in it. Compare events by
    content: the daemon sends one again when the broker died before acknowledging it."""
    watcher = Watcher(cast(aiomqtt.Client, None))

    async def follow() -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", port, identifier="fault-watcher", clean_session=False
                ) as client:
                    await client.subscribe("edgespeak/testnode/#", qos=0)
                    watcher.client = client
                    await watcher.pump()
            except aiomqtt.MqttError:
                await asyncio.sleep(RETRY_S)  # the broker is down: try again shortly

    task = asyncio.create_task(follow())
    try:
        yield watcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def distinct(events: list[dict[str, Any]], state: str) -> Counter[str]:
    """How many different ``state`` events each id got (one event received twice has the
    same ``at``; a second speaking would have its own)."""
    unique = {json.dumps(e, sort_keys=True): e for e in events if e.get("state") == state}
    return Counter(e["id"] for e in unique.values())


def utterances(capture: bytes, audio: dict[str, bytes]) -> list[str]:
    """Split ``capture`` into the utterances it is made of: the ids (keys of ``audio``) in
    the order they were played. Raises AssertionError where no single one matches."""
    played, pos = [], 0
    while pos < len(capture):
        found = [key for key, pcm in audio.items() if capture.startswith(pcm, pos)]
        assert len(found) == 1, f"at byte {pos} of {len(capture)}: matches {found}"
        played.append(found[0])
        pos += len(audio[found[0]])
    return played


async def test_broker_killed_while_publishing_loses_nothing_and_speaks_nothing_twice(
    stack: Stack,
) -> None:
    stack.broker.stop()
    stack.broker.persistence, stack.broker.options = True, DURABLE_BROKER
    stack.broker.start()
    texts = {f"item-{n}": f"Item {n}." for n in range(1, COUNT + 1)}
    texts["sentinel"] = "That is all."
    limit = asyncio.Semaphore(4)

    async def reference(text: str) -> bytes:
        async with limit:
            return await server_audio(stack.tts.url, text, fmt="pcm", rate=22050)

    pcm = dict(zip(texts, await asyncio.gather(*map(reference, texts.values())), strict=True))
    for a, b in ((a, b) for a in pcm for b in pcm if a != b):
        assert not pcm[b].startswith(pcm[a]), f"{a} is a prefix of {b}: pick other texts"
    # The sentinel goes last: the broker delivers it after the others, and the daemon speaks
    # equal priorities in arrival order, so everything delivered before it (redeliveries and
    # copies sent again included) has been spoken once it has.
    payloads = [json.dumps({"text": text, "id": ann_id}) for ann_id, text in texts.items()]
    publisher = Publisher(stack.broker.port, payloads, hold=KILL_AFTER)
    with daemon_process(stack.config(), stack.capture, stack.workdir, env=BURST_ENV) as daemon:
        async with surviving_watcher(stack.broker.port) as w:
            async with asyncio.timeout(STARTUP_S):
                await w.online.wait()
            publishing = asyncio.create_task(publisher.run())
            async with asyncio.timeout(30):
                await publisher.held.wait()
            await w.wait("received", ann_id=f"item-{KILL_AFTER}")
            broker = stack.broker.proc
            assert broker is not None
            os.kill(broker.pid, signal.SIGSTOP)  # frozen: it acknowledges nothing more
            publisher.go.set()  # the next one goes out to the frozen broker
            await publisher.sending.wait()
            broker.kill()  # SIGKILL: no clean shutdown, no last save
            await asyncio.to_thread(broker.wait)
            speaking = len(distinct(w.events, "finished"))
            stack.broker.start()
            async with asyncio.timeout(60):
                await publishing
            await w.wait("finished", "failed", ann_id="sentinel", timeout_s=60)
            assert daemon.poll() is None
    duplicates = stack.daemon_log.read_text().count("ignoring duplicate announcement id")
    print(
        f"\nbroker killed after {KILL_AFTER} acknowledged, {speaking} spoken; publisher sent "
        f"{publisher.resent} again; the daemon ignored {duplicates} duplicates"
    )
    assert speaking < KILL_AFTER, "the daemon should still be speaking when the broker dies"
    assert publisher.resent >= 1, "the publication in flight must have been sent again"
    once = Counter(list(texts))
    finished = distinct(w.events, "finished")
    assert finished == once, {i: finished[i] for i in texts if finished[i] != 1}
    assert not distinct(w.events, "failed") and not distinct(w.events, "expired"), w.events
    played = utterances(stack.capture.read(), pcm)
    assert Counter(played) == once, {i: n for i, n in Counter(played).items() if n != 1}
    assert played[-1] == "sentinel"


async def state_reads(port: int, state: str) -> None:
    """Return once the daemon's retained state on the broker at ``port`` says ``state``."""
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe("edgespeak/testnode/state", qos=1)
        async for message in client.messages:
            if json.loads(bytes(message.payload))["state"] == state:  # type: ignore[arg-type]
                return


async def test_an_event_in_flight_when_the_broker_dies_is_sent_again(stack: Stack) -> None:
    """The broker is frozen while an announcement plays, so the daemon's ``finished`` event
    goes out and is never acknowledged; then the broker is killed and restarted. The daemon
    sends that event again on its next connection: the watcher gets it."""
    stack.broker.stop()
    stack.broker.persistence, stack.broker.options = True, DURABLE_BROKER
    stack.broker.start()
    async with held_provider() as provider, surviving_watcher(stack.broker.port) as w:
        config = stack.config(tts_url=provider.url)
        with daemon_process(config, stack.capture, stack.workdir) as daemon:
            async with asyncio.timeout(STARTUP_S):
                await w.online.wait()
            await w.announce(json.dumps({"text": HOLD, "id": "held-1"}))
            await w.wait("playing", ann_id="held-1")
            async with asyncio.timeout(10):
                await state_reads(stack.broker.port, "speaking")  # nothing left to publish
            broker = stack.broker.proc
            assert broker is not None
            os.kill(broker.pid, signal.SIGSTOP)  # it acknowledges nothing from now on
            provider.release.set()
            await logged(stack.daemon_log, "spoke held-1")  # 'finished' is in flight now
            broker.kill()
            await asyncio.to_thread(broker.wait)
            stack.broker.start()
            await w.wait("finished", ann_id="held-1", timeout_s=15)
            assert daemon.poll() is None
    assert distinct(w.events, "finished") == Counter(["held-1"])


async def test_queued_states_never_push_queued_events_out(broker: Mosquitto) -> None:
    """Posted while the broker link is not up (an outage, or a burst faster than the broker
    acknowledges): 900 events, each followed by three changes of the retained state. The
    states share one place in the outbox (only the newest matters), so none of the events is
    dropped to make room, and they go out in order."""
    settings = Settings(node_id="testnode", mqtt={"port": broker.port, "reconnect_max_s": 1.0})
    link = MqttLink(settings, [Route("edgespeak/testnode/announce", lambda _: None)])
    count = 900
    assert count + 1 <= OUTBOX_MESSAGES < count * 4  # without sharing, events would be dropped
    for i in range(count):
        link.post_event(Event(f"e-{i}", "received"))
        for j in range(3):
            link.post(link.topics.state, json.dumps({"n": i * 3 + j}).encode(), retain=True)
    events, states = [], []
    async with aiomqtt.Client("127.0.0.1", broker.port) as watcher:
        await watcher.subscribe("edgespeak/testnode/#", qos=1)
        running = asyncio.create_task(link.run())
        try:
            async with asyncio.timeout(10):  # they take ~1 s
                async for message in watcher.messages:
                    payload = bytes(message.payload)  # type: ignore[arg-type]
                    if message.topic.matches("edgespeak/testnode/state"):
                        states.append(json.loads(payload))
                    elif message.topic.matches("edgespeak/testnode/event"):
                        events.append(json.loads(payload)["id"])
                        if len(events) == count:
                            break
        finally:
            running.cancel()
            async with asyncio.timeout(STOP_S):  # a lost cancellation kept it reconnecting
                await asyncio.wait({running})
    assert running.cancelled(), "the link must stop when cancelled"
    assert events == [f"e-{i}" for i in range(count)]
    assert states == [{"n": count * 3 - 1}]


def test_the_outbox_holds_the_events_of_a_full_queue() -> None:
    """A burst the queue accepts (received, playing, finished each) fits in the outbox: the
    1,000-announcement soak lost events under load while the outbox was fixed at 1000."""
    assert outbox_capacity(20) == OUTBOX_MESSAGES
    assert outbox_capacity(1000) >= 3 * 1000 + 1
