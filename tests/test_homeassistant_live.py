"""Home Assistant against the real daemon: discovery, birth, removal, availability, the notify
entity, volume, the test-chime button, the node state and group topics.

Real Mosquitto, real ``edgespeak run`` and ``edgespeak ha remove`` subprocesses, the real local
TTS server and ALSA file capture (tests/conftest.py). Home Assistant's side is played by MQTT
clients of the test and by Jinja2 rendering the templates the way Home Assistant does
(tests/test_homeassistant.py). Every wait is on a real message, bounded by a deadline; "nothing
else arrived" is checked up to a barrier message that arrives after everything it rules out.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import math
import os
import subprocess
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest

from edgespeak import __version__
from edgespeak.config import Settings, load_config
from edgespeak.inlets.homeassistant.discovery import discovery_messages
from edgespeak.inlets.mqtt.topics import Topics
from harness.stack import edgespeak_command
from tests.conftest import Stack, base_env, daemon_process, watching
from tests.test_playback import samples

DOOR = "Someone is at the front door."
WASHER = "The washing machine has finished. Please empty it."
SMOKE = "Smoke in the kitchen! Please leave the house."
DOWNSTAIRS = "The dishwasher downstairs is done."
UPSTAIRS = "The bathroom upstairs is free."
EVERYONE = "Dinner is ready."

NODE = "edgespeak/testnode"
ANNOUNCE = f"{NODE}/announce"
CHIME = f"{NODE}/chime"
VOLUME_SET = f"{NODE}/volume/set"
STATE = f"{NODE}/state"
EVENT = f"{NODE}/event"
AVAILABILITY = f"{NODE}/availability"
HA_STATUS = "homeassistant/status"
DISCOVERY = "homeassistant/#"
BARRIER = "edgespeak-test/barrier"
WAIT_S = 10.0
RATE = 22050


@pytest.fixture(autouse=True)
def no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_config here must see what the daemon sees: its environment has no EDGESPEAK_*."""
    for name in list(os.environ):
        if name.startswith("EDGESPEAK_"):
            monkeypatch.delenv(name)


# --- an MQTT client that keeps everything -------------------------------------------------------


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Inbox:
    """Every message on the subscribed filters, in arrival order (one connection, so the
    broker's per-connection order holds)."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.messages: list[Msg] = []
        self._changed = asyncio.Condition()
        self._barriers = itertools.count()

    async def pump(self) -> None:
        async for message in self.client.messages:
            payload = message.payload
            assert isinstance(payload, bytes | bytearray), payload
            async with self._changed:
                self.messages.append(Msg(str(message.topic), bytes(payload), message.retain))
                self._changed.notify_all()

    async def wait_for(
        self, match: Callable[[Msg], bool], *, after: int = 0, count: int = 1,
        timeout_s: float = WAIT_S,
    ) -> int:  # fmt: skip
        """The index of the ``count``-th message from index ``after`` on that ``match``es."""
        async with asyncio.timeout(timeout_s), self._changed:
            while True:
                hits = [i for i in range(after, len(self.messages)) if match(self.messages[i])]
                if len(hits) >= count:
                    return hits[count - 1]
                await self._changed.wait()

    async def publish(self, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
        await self.client.publish(topic, payload, qos=1, retain=retain)

    async def barrier(self) -> int:
        """Publish a marker to ourselves and return its index once it is back: everything the
        broker queued for us before it (retained messages of our subscriptions) came first."""
        topic = f"{BARRIER}/{next(self._barriers)}"
        await self.publish(topic, b"")
        return await self.wait_for(lambda m: m.topic == topic)

    def on(self, topic: str, start: int = 0, stop: int | None = None) -> list[Msg]:
        return [m for m in self.messages[start:stop] if m.topic == topic]

    def under(self, prefix: str, start: int = 0, stop: int | None = None) -> list[Msg]:
        return [m for m in self.messages[start:stop] if m.topic.startswith(prefix)]


@contextlib.asynccontextmanager
async def inbox(port: int, *filters: str) -> AsyncIterator[Inbox]:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe([(f, 1) for f in (*filters, f"{BARRIER}/#")])
        box = Inbox(client)
        task = asyncio.create_task(box.pump())
        try:
            yield box
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def retained(port: int, *filters: str) -> list[Msg]:
    """What a client subscribing now receives before anything new: the retained messages."""
    async with inbox(port, *filters) as box:
        end = await box.barrier()
        return box.messages[:end]


def is_state(m: Msg) -> bool:
    return m.topic == STATE and m.payload != b""


async def wait_state(box: Inbox, match: Callable[[dict[str, Any]], bool], after: int = 0) -> int:
    return await box.wait_for(lambda m: is_state(m) and match(m.json()), after=after)


async def discovery_on_broker(port: int) -> dict[str, Msg]:
    """The retained discovery messages, once the daemon has published them all: its first
    state message is queued behind them in its outbox."""
    async with inbox(port, STATE) as box:
        await box.wait_for(is_state)
    return {m.topic: m for m in await retained(port, DISCOVERY)}


# --- config, expectations, audio -----------------------------------------------------------------


def node_config(stack: Stack, extra: str = "", **options: Any) -> Path:
    """The stack's daemon config (``options`` as for :meth:`Stack.config`) with a private
    ``[daemon] state_dir`` (the default is /var/lib/edgespeak) and the TOML in ``extra``."""
    path = stack.config(**options)
    state_dir = stack.workdir / "state"
    path.write_text(path.read_text() + f'[daemon]\nstate_dir = "{state_dir}"\n' + extra)
    return path


def expected_discovery(config: Path) -> list[tuple[str, bytes]]:
    s = load_config(config)
    return discovery_messages(s, topics(s), version=__version__)


def topics(s: Settings) -> Topics:
    return Topics.from_settings(s)


def entity(config: Path, component: str, key: str) -> dict[str, Any]:
    for topic, payload in expected_discovery(config):
        if topic.split("/")[1] == component and topic.split("/")[3].endswith(f"_{key}"):
            found: dict[str, Any] = json.loads(payload)
            return found
    raise AssertionError(f"no {component} {key}")


def assert_scaled(played: bytes, source: bytes, gain: float) -> None:
    """``played`` is ``source`` times ``gain`` (rounded: ±1), sample for sample."""
    p, s = samples(played), samples(source)
    assert len(p) == len(s), (len(p), len(s))
    assert np.max(np.abs(s)) > 1000  # real speech, not silence
    assert np.max(np.abs(p - s * gain)) <= 1


def tone(rate: int, seconds: float, freq: float) -> bytes:
    n = round(rate * seconds)
    values = [round(12000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(n)]
    return np.array(values, dtype="<i2").tobytes()


def wav_file(pcm: bytes, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


async def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, edgespeak_command(*args), capture_output=True, text=True,
        env=base_env(), timeout=60,
    )  # fmt: skip


def is_discovery(m: Msg) -> bool:
    return m.topic.startswith("homeassistant/") and m.topic != HA_STATUS


def by_topic(messages: list[Msg]) -> list[tuple[str, bytes, bool]]:
    """(topic, payload, retain), sorted: the broker sends retained messages in its own order."""
    return sorted((m.topic, m.payload, m.retain) for m in messages)


# --- discovery, birth, removal, availability ----------------------------------------------------


async def test_discovery_is_retained_at_connect_and_sent_again_on_home_assistants_birth(
    stack: Stack,
) -> None:
    config = node_config(stack)
    expected = expected_discovery(config)
    assert len(expected) == 10
    port = stack.broker.port
    async with stack.daemon(config):
        snapshot = list((await discovery_on_broker(port)).values())
        async with inbox(port, DISCOVERY, EVENT, STATE) as box:
            subscribed = await box.barrier()
            # Home Assistant going offline is no reason to publish. The daemon handles its
            # messages in order: the failure of a chime request sent after it is the barrier.
            await box.publish(HA_STATUS, b"offline")
            await box.publish(CHIME, b"barrier-chime")
            failed = await box.wait_for(
                lambda m: m.topic == EVENT and "barrier-chime" in m.json().get("error", ""),
                after=subscribed,
            )
            await wait_state(box, lambda s: "barrier-chime" in (s["last_error"] or ""))
            birth = len(box.messages)
            await box.publish(HA_STATUS, b"online")  # Home Assistant's birth, not retained
            tenth = await box.wait_for(is_discovery, after=birth, count=len(expected))
            # The state is published again right after the discovery: nothing more is coming.
            state_after = await box.wait_for(is_state, after=tenth)
    assert by_topic(snapshot) == sorted((t, p, True) for t, p in expected)
    # A new subscriber gets them again, retained, and nothing else under homeassistant/.
    assert by_topic(box.under("homeassistant/", 0, subscribed)) == by_topic(snapshot)
    assert box.under("homeassistant/", subscribed, failed) == [Msg(HA_STATUS, b"offline", False)]
    again = [m for m in box.messages[birth:state_after] if is_discovery(m)]
    assert [(m.topic, m.payload) for m in again] == expected  # once each, in order
    assert not any(m.retain for m in again)  # live re-publications


async def test_clean_stop_reads_offline_and_ha_remove_clears_the_node(stack: Stack) -> None:
    config = node_config(stack)
    port = stack.broker.port
    with daemon_process(config, stack.capture, stack.workdir) as proc:
        async with watching(port):
            await discovery_on_broker(port)
            running = await retained(port, AVAILABILITY)
    # daemon_process stopped it with SIGTERM
    assert proc.returncode == 0, stack.daemon_log.read_text()
    assert [(m.payload, m.retain) for m in running] == [(b"online", True)]
    stopped = await retained(port, DISCOVERY, STATE, AVAILABILITY)
    left = {m.topic: m for m in stopped}
    assert set(left) == {topic for topic, _ in expected_discovery(config)} | {STATE, AVAILABILITY}
    assert all(m.retain for m in stopped) and len(stopped) == len(left)
    assert left[AVAILABILITY].payload == b"offline"
    assert left[STATE].json()["state"] == "idle"

    done = await run_cli("ha", "remove", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "removed node 'testnode' from Home Assistant (12 topics cleared)" in done.stdout
    assert await retained(port, DISCOVERY, STATE, AVAILABILITY) == []


async def test_a_killed_daemon_reads_offline_through_its_will(stack: Stack) -> None:
    port = stack.broker.port
    with daemon_process(node_config(stack), stack.capture, stack.workdir) as proc:
        async with watching(port), inbox(port, AVAILABILITY) as box:
            online = await box.wait_for(lambda m: m.payload == b"online")
            proc.kill()  # no DISCONNECT: the broker publishes the will on the closed socket
            offline = await box.wait_for(lambda m: m.payload == b"offline", after=online)
        assert await asyncio.to_thread(proc.wait, WAIT_S) == -9
    assert box.messages[offline].topic == AVAILABILITY
    assert [(m.payload, m.retain) for m in await retained(port, AVAILABILITY)] == [
        (b"offline", True)
    ]
