"""Several real daemons on one broker and one local TTS server, for the group playback tests:
each with its own node id, ALSA ``file`` capture, cache and log; one MQTT client watching
every node's events, availability and the group topics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np

from harness.stack import STARTUP_S
from tests.conftest import AlsaCapture, Broker, TtsServer, daemon_config, daemon_process

GROUP = "margin_hit_ms = 500\nmargin_stream_ms = 1000\n"


@dataclass
class Node:
    """One daemon of the group."""

    node_id: str
    workdir: Path
    capture: AlsaCapture
    proc: subprocess.Popen[bytes] | None = None

    @property
    def cache_dir(self) -> Path:
        return self.workdir / "cache"

    @property
    def log(self) -> Path:
        return self.workdir / "daemon.log"


@dataclass
class GroupWatch:
    """Events of every node (``events[node]``), availability, and group messages seen."""

    client: aiomqtt.Client
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    online: dict[str, bool] = field(default_factory=dict)
    info: dict[str, bytes] = field(default_factory=dict)  # retained group info, by node
    plans: list[dict[str, Any]] = field(default_factory=list)
    relayed: list[str] = field(default_factory=list)  # topic of each relay message seen
    relay_payloads: list[bytes] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def pump(self) -> None:
        async for message in self.client.messages:
            topic = str(message.topic)
            payload = bytes(message.payload)  # type: ignore[arg-type]
            node = topic.split("/")[1]
            async with self._changed:
                if topic.endswith("/availability"):
                    self.online[node] = payload == b"online"
                elif topic.endswith("/info"):
                    self.info[node] = payload
                elif topic.endswith("/event"):
                    self.events.setdefault(node, []).append(json.loads(payload))
                elif topic.endswith("/sync/plan"):
                    self.plans.append(json.loads(payload))
                elif "/sync/audio/" in topic:
                    self.relayed.append(topic)
                    self.relay_payloads.append(payload)
                self._changed.notify_all()

    async def until(self, check: Any, timeout_s: float = 30.0) -> None:
        """Return once ``check()`` is true (evaluated at every message)."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(check)

    def final(self, node: str, ann_id: str) -> dict[str, Any] | None:
        for event in self.events.get(node, []):
            if event["id"] == ann_id and event["state"] in ("finished", "failed", "interrupted"):
                return event
        return None

    async def finals(
        self, nodes: list[str], ann_id: str, timeout_s: float = 30.0
    ) -> dict[str, Any]:
        """Each node's last event of ``ann_id``, by node."""
        await self.until(lambda: all(self.final(n, ann_id) for n in nodes), timeout_s)
        return {n: self.final(n, ann_id) for n in nodes}

    async def announce_all(self, payload: dict[str, Any]) -> None:
        await self.client.publish("edgespeak/all/announce", json.dumps(payload), qos=1)


@contextlib.contextmanager
def group_nodes(
    ids: list[str], broker: Broker, tts_url: str, root: Path, *, pulse: str | None = None,
    group: dict[str, str] | None = None, **options: Any,
) -> Iterator[list[Node]]:  # fmt: skip
    """Start one daemon per id on the provider at ``tts_url`` (``options`` as for
    :func:`daemon_config`); stop them after. ``pulse``: a PulseAudio server whose null sink
    paces every node's capture in real time. ``group``: more ``[group]`` lines for some
    nodes. The margins are wide (``GROUP``): on a loaded test machine no node may be late for
    the start and skip frames, or the captures would not compare byte for byte."""
    nodes = []
    with contextlib.ExitStack() as stack:
        for node_id in ids:
            workdir = root / node_id
            workdir.mkdir()
            capture = AlsaCapture(workdir / "asound.conf", workdir / "capture.raw", pulse)
            config = daemon_config(
                workdir / "daemon.toml", broker_port=broker.port, tts_url=tts_url,
                cache_dir=workdir / "cache", **options,
            )  # fmt: skip
            text = config.read_text().replace('node_id = "testnode"', f'node_id = "{node_id}"')
            config.write_text(f"{text}[group]\n{GROUP}{(group or {}).get(node_id, '')}")
            node = Node(node_id, workdir, capture)
            node.proc = stack.enter_context(daemon_process(config, capture, workdir))
            nodes.append(node)
        yield nodes


@contextlib.asynccontextmanager
async def watch_group(broker: Broker, ids: list[str]) -> AsyncIterator[GroupWatch]:
    """A :class:`GroupWatch` on ``broker``, once every node in ``ids`` is online and has
    published its group info (so every node knows every member)."""
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        topics = ("edgespeak/+/event", "edgespeak/+/availability", "edgespeak/+/info")
        for topic in (*topics, "edgespeak/sync/#"):
            await client.subscribe(topic, qos=1)
        watch = GroupWatch(client)
        task = asyncio.create_task(watch.pump())
        try:
            await watch.until(
                lambda: all(watch.online.get(n) and watch.info.get(n) for n in ids), STARTUP_S
            )
            yield watch
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def sessions(tts: TtsServer) -> int:
    """Sessions the local TTS server has finished (its log)."""
    log = tts.workdir / "server.log"
    return log.read_text().count("session finished") if log.exists() else 0


def sound(pcm: bytes) -> bytes:
    """``pcm`` (s16le) without its zero samples: what a capture says was played, whatever
    silence the audio layer wrote to place the first frame at its instant."""
    samples = np.frombuffer(pcm, dtype="<i2")
    return samples[samples != 0].tobytes()


def trimmed(pcm: bytes) -> bytes:
    """``pcm`` (s16le) from its first sample that is not zero: the speech and what followed."""
    nonzero = np.flatnonzero(np.frombuffer(pcm, dtype="<i2"))
    return pcm[2 * int(nonzero[0]) :] if len(nonzero) else b""


async def sounding(node: Node, seconds: float, rate_hz: int = 22050, timeout_s: float = 30) -> None:
    """Return once ``node``'s capture holds ``seconds`` of sound (samples not zero)."""

    def poll() -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pcm = node.capture.read()
            if (
                np.count_nonzero(np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2"))
                >= seconds * rate_hz
            ):
                return True
            time.sleep(0.02)  # polls the real condition, bounded by the deadline
        return False

    assert await asyncio.to_thread(poll), f"{node.node_id} played no {seconds} s in {timeout_s} s"
