"""The group clock between real daemons (``edgespeak run`` subprocesses) on one real Mosquitto.

All run on this machine, so they share ``time.monotonic()``: a node skewed with ``[group]
test_clock_offset_s`` / ``test_clock_drift_ppm`` has a local clock whose truth is known
exactly, and so is group time (the reference's local clock). Each daemon's estimate is read
the way an operator would, from its answer on ``<prefix>/<node>/clock/status``
(docs/protocols.md §15), and compared with that truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from harness.stack import Mosquitto, edgespeak_command, free_port
from tests.conftest import AlsaCapture, base_env, daemon_config, daemon_process, logged

MAX_ERROR_MS = 5.0  # the bound the daemons must reach on a loaded test machine


@dataclass(frozen=True)
class Node:
    """A daemon of the test and its clock's skew."""

    node_id: str
    offset_s: float = 0.0
    drift_ppm: float = 0.0

    def local(self, mono: float) -> float:
        """This node's local clock at ``time.monotonic()`` ``mono``."""
        return mono * (1 + self.drift_ppm / 1e6) + self.offset_s


A = Node("node-a")
B = Node("node-b", offset_s=3.7, drift_ppm=400)
C = Node("node-c", offset_s=-1.25, drift_ppm=-150)


def node_files(
    node: Node, broker: Mosquitto, tmp_path: Path
) -> tuple[Path, AlsaCapture, dict[str, str]]:
    """The config, ALSA capture and environment of ``node`` (in ``tmp_path/<node>/``)."""
    work = tmp_path / node.node_id
    work.mkdir(exist_ok=True)
    config = daemon_config(
        work / "daemon.toml", broker_port=broker.port, cache_dir=work / "cache",
        tts_url=f"ws://127.0.0.1:{free_port()}/v1/tts/live", fallback=False,
    )  # fmt: skip
    env = {
        "EDGESPEAK_NODE_ID": node.node_id,
        "EDGESPEAK_HOMEASSISTANT__ENABLED": "false",
        "EDGESPEAK_GROUP__TEST_CLOCK_OFFSET_S": str(node.offset_s),
        "EDGESPEAK_GROUP__TEST_CLOCK_DRIFT_PPM": str(node.drift_ppm),
        "EDGESPEAK_GROUP__MAX_CLOCK_ERROR_MS": str(MAX_ERROR_MS),
    }
    return config, AlsaCapture(work / "asound.conf", work / "capture.raw"), env


@contextlib.contextmanager
def running(node: Node, broker: Mosquitto, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``edgespeak run`` as ``node`` (its log: ``tmp_path/<node>/daemon.log``)."""
    config, capture, env = node_files(node, broker, tmp_path)
    with daemon_process(config, capture, config.parent, env=env) as proc:
        yield proc


async def doctor_row(node: Node, broker: Mosquitto, tmp_path: Path) -> str:
    """``edgespeak doctor`` run as ``node``: its ``clock`` row."""
    config, capture, env = node_files(node, broker, tmp_path)
    proc = await asyncio.create_subprocess_exec(
        *edgespeak_command("doctor", "--config", str(config)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=base_env() | capture.env | env,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    rows = [line for line in out.decode().splitlines() if line.startswith("clock ")]
    assert len(rows) == 1, out.decode()
    return " ".join(rows[0].split())


def log_of(node: Node, tmp_path: Path) -> Path:
    return tmp_path / node.node_id / "daemon.log"


async def logged_again(path: Path, needle: str, timeout_s: float = 30) -> None:
    """Return once the log at ``path`` holds ``needle`` twice."""

    def poll() -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if path.read_text(errors="replace").count(needle) >= 2:
                return True
            time.sleep(0.02)  # polls the real condition, bounded by the deadline
        return False

    assert await asyncio.to_thread(poll), f"{needle!r} not twice in {path}"


class Asker:
    """Asks a daemon for its clock (``clock/get``) and returns its ``clock/status``."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.answers: dict[str, asyncio.Queue[dict[str, Any]]] = {}

    async def pump(self) -> None:
        async for message in self.client.messages:
            node = str(message.topic).split("/")[1]
            assert isinstance(message.payload, bytes)
            await self.answers.setdefault(node, asyncio.Queue()).put(json.loads(message.payload))

    async def status(self, node: Node) -> dict[str, Any]:
        queue = self.answers.setdefault(node.node_id, asyncio.Queue())
        await self.client.publish(f"edgespeak/{node.node_id}/clock/get", b"", qos=1)
        async with asyncio.timeout(10):
            return await queue.get()


@contextlib.asynccontextmanager
async def asking(broker: Mosquitto) -> AsyncIterator[Asker]:
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        await client.subscribe("edgespeak/+/clock/status", qos=1)
        asker = Asker(client)
        task = asyncio.create_task(asker.pump())
        try:
            yield asker
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def assert_on_group_time(status: dict[str, Any], node: Node, reference: Node) -> None:
    """``status`` (a ``clock/status`` answer) reads group time within its own error bound."""
    mono = status["monotonic_s"]
    assert status["node"] == node.node_id and status["reference"] == reference.node_id
    assert status["synced"] is True, status["reason"]
    assert status["local_s"] == pytest.approx(node.local(mono), abs=1e-6)
    error_s = status["error_ms"] / 1e3
    assert error_s <= MAX_ERROR_MS / 1e3
    assert abs(status["group_s"] - reference.local(mono)) <= error_s, status


async def test_skewed_nodes_read_the_reference_s_clock_within_their_bound(
    broker: Mosquitto, tmp_path: Path
) -> None:
    with running(A, broker, tmp_path), running(B, broker, tmp_path):
        with running(C, broker, tmp_path):
            for node in (B, C):
                await logged(log_of(node, tmp_path), "group clock synced to node-a")
            async with asking(broker) as asker:
                a = await asker.status(A)
                assert (a["reference"], a["synced"], a["error_ms"]) == ("node-a", True, 0.0)
                assert a["group_s"] == pytest.approx(a["monotonic_s"], abs=1e-9)
                for node in (B, C):
                    status = await asker.status(node)
                    assert_on_group_time(status, node, A)
                    assert status["offset_s"] == pytest.approx(
                        A.local(status["monotonic_s"]) - node.local(status["monotonic_s"]),
                        abs=MAX_ERROR_MS / 1e3,
                    )


async def test_drift_is_measured_once_the_samples_span_ten_seconds(
    broker: Mosquitto, tmp_path: Path
) -> None:
    fast = Node("node-b", offset_s=3.7, drift_ppm=400)
    with running(A, broker, tmp_path), running(fast, broker, tmp_path):
        await logged(log_of(fast, tmp_path), "group clock synced to node-a")
        async with asking(broker) as asker:
            status = await asker.status(fast)
            async with asyncio.timeout(60):
                while status["drift_ppm"] == 0.0:  # fitted once the samples span 10 s
                    await asyncio.sleep(0.5)  # the pace of asking; the condition is checked
                    status = await asker.status(fast)
            # 10 s of samples tell the drift within ~±1.5 ms / 10 s (±150 ppm) on a machine
            # slow to wake (once -247 ppm); 10 s more of them halve that
            await asyncio.sleep(10.0)  # the samples accumulate: what is tested takes time
            status = await asker.status(fast)
            # group/local = 1 / 1.0004: about -400 ppm
            assert status["drift_ppm"] == pytest.approx(-400, abs=100)
            assert_on_group_time(status, fast, A)


async def test_when_the_reference_goes_the_next_lowest_node_takes_over(
    broker: Mosquitto, tmp_path: Path
) -> None:
    with running(B, broker, tmp_path), running(C, broker, tmp_path):
        with running(A, broker, tmp_path) as reference:
            for node in (B, C):
                await logged(log_of(node, tmp_path), "group clock synced to node-a")
            reference.send_signal(signal.SIGKILL)  # the broker publishes its will: offline
            reference.wait()
        await logged(log_of(C, tmp_path), "group clock synced to node-b")
        await logged(log_of(B, tmp_path), "group clock: this node is the reference")
        async with asking(broker) as asker:
            b = await asker.status(B)
            assert (b["reference"], b["synced"], b["error_ms"]) == ("node-b", True, 0.0)
            assert b["live"] == ["node-b", "node-c"]
            assert_on_group_time(await asker.status(C), C, B)


async def test_a_reference_that_never_answers_leaves_the_node_unsynced_with_a_reason(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """A retained ``online`` and info of a node that does not run: it is the lowest id, so
    the reference, but no pong ever comes."""
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        await client.publish("edgespeak/aaa/availability", b"online", qos=1, retain=True)
        info = json.dumps({"groups": [], "sync": True})
        await client.publish("edgespeak/aaa/info", info, qos=1, retain=True)
    with running(B, broker, tmp_path):
        await logged(log_of(B, tmp_path), "group clock reference: aaa")
        await logged(log_of(B, tmp_path), "group clock not synced: no clock sample")
        async with asking(broker) as asker:
            status = await asker.status(B)
    assert (status["reference"], status["synced"]) == ("aaa", False)
    assert status["reason"] == "no clock sample from the reference aaa yet"
    assert status["error_ms"] is None


async def test_doctor_shows_the_daemon_s_clock(broker: Mosquitto, tmp_path: Path) -> None:
    with running(A, broker, tmp_path), running(B, broker, tmp_path):
        await logged(log_of(B, tmp_path), "group clock synced to node-a")
        assert await doctor_row(A, broker, tmp_path) == (
            "clock ok this node (node-a) is the group's reference"
        )
        row = await doctor_row(B, broker, tmp_path)
    assert row.startswith("clock ok reference node-a, offset -"), row
    assert row.endswith(" ms, synced"), row
    assert "no daemon of node 'node-b' answered" in await doctor_row(B, broker, tmp_path)


async def test_a_reference_that_stops_answering_unsyncs_the_others_until_it_is_back(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """The reference frozen (SIGSTOP): its connection and retained ``online`` stay, its pongs
    stop. After 3 intervals the node says so; thawed, it syncs again."""
    with running(A, broker, tmp_path) as reference, running(B, broker, tmp_path):
        log = log_of(B, tmp_path)
        await logged(log, "group clock synced to node-a")
        reference.send_signal(signal.SIGSTOP)
        try:
            await logged(log, "group clock not synced: the reference node-a has not answered")
            async with asking(broker) as asker:
                status = await asker.status(B)
        finally:
            reference.send_signal(signal.SIGCONT)
        assert (status["reference"], status["synced"]) == ("node-a", False)
        assert status["reason"].startswith("the reference node-a has not answered for ")
        async with asking(broker) as asker:
            status = await asker.status(B)
            async with asyncio.timeout(20):
                while not status["synced"]:
                    await asyncio.sleep(0.5)  # the pace of asking; the condition is checked
                    status = await asker.status(B)
            assert_on_group_time(status, B, A)


async def test_after_a_broker_restart_the_nodes_find_each_other_and_resync(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """The broker keeps nothing (no persistence): the retained availability and info come
    back only as the daemons reconnect and publish them again."""
    with running(A, broker, tmp_path), running(B, broker, tmp_path):
        log = log_of(B, tmp_path)
        await logged(log, "group clock synced to node-a")
        broker.restart()
        await logged(log, "lost the broker")
        await logged_again(log, "connected to broker")  # subscribed again: clock/get is heard
        async with asking(broker) as asker:
            status = await asker.status(B)
            async with asyncio.timeout(30):
                while not (status["synced"] and status["live"] == ["node-a", "node-b"]):
                    await asyncio.sleep(0.5)  # the pace of asking; the condition is checked
                    status = await asker.status(B)
            assert_on_group_time(status, B, A)
