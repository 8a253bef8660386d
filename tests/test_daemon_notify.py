"""The daemon under systemd's notify protocol: READY only when it can speak (or degraded, saying
why), watchdog pings while healthy, STOPPING on shutdown — over a real NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edgespeak.daemon import AUDIO_STALL_S
from harness.stack import PulseAudio, free_port
from tests.conftest import Stack, daemon_process, watching
from tests.test_scheduler import HOLD

WATCHDOG_USEC = 200_000  # pings every 0.1 s


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's: collects what the daemon sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    async def next(self, key: str, timeout_s: float = 20.0) -> dict[str, str]:
        """The next datagram carrying ``key`` (earlier ones are kept in ``messages``)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            while True:
                data = await loop.sock_recv(self.sock, 4096)
                fields = dict(
                    line.split("=", 1) for line in data.decode().splitlines() if "=" in line
                )
                self.messages.append(fields)
                if key in fields:
                    return fields


async def pings_stop(ns: NotifySocket, within_s: float) -> bool:
    """True once no WATCHDOG=1 came for a second, False if they kept coming ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            await ns.next("WATCHDOG", timeout_s=1.0)
        except TimeoutError:
            return True
    return False


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    ns = NotifySocket(tmp_path / "notify.sock")
    yield ns
    ns.sock.close()


@contextlib.asynccontextmanager
async def notified_daemon(stack: Stack, ns: NotifySocket, config: Path) -> AsyncIterator[None]:
    env = {"NOTIFY_SOCKET": str(ns.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    with daemon_process(config, stack.capture, stack.workdir, env):
        yield


async def test_ready_once_broker_and_tts_are_up_then_pings_then_stopping(
    stack: Stack, notify_socket: NotifySocket
) -> None:
    async with notified_daemon(stack, notify_socket, stack.config()):
        ready = await notify_socket.next("READY")
        assert ready["READY"] == "1"
        assert ready["STATUS"] == "ready: broker connected, TTS connection warm"
        for _ in range(3):
            await notify_socket.next("WATCHDOG")
    # daemon_process sent SIGTERM on leaving
    stopping = await notify_socket.next("STOPPING")
    assert stopping["STOPPING"] == "1"
    assert sum("READY" in m for m in notify_socket.messages) == 1  # READY=1 once only


async def test_ready_degraded_when_the_provider_is_down_saying_why(
    stack: Stack, notify_socket: NotifySocket
) -> None:
    config = stack.config(tts_url=f"ws://127.0.0.1:{free_port()}/v1/tts/live")
    with config.open("a") as f:
        f.write("[daemon]\nready_wait_s = 0.5\n")
    async with notified_daemon(stack, notify_socket, config):
        ready = await notify_socket.next("READY")
        assert ready["STATUS"] == "degraded: TTS provider unreachable; retrying"
        await notify_socket.next("WATCHDOG")  # degraded is not unhealthy: it still speaks


async def test_ready_degraded_says_the_key_was_refused_not_retrying(
    stack: Stack, notify_socket: NotifySocket
) -> None:
    stack.tts.stop()
    stack.tts.token = "sk-right-key"
    stack.tts.start()
    config = stack.config()
    text = config.read_text().replace("[tts]\n", '[tts]\napi_key = "sk-wrong-key"\n', 1)
    config.write_text(text + "[daemon]\nready_wait_s = 3.0\n")  # ample for the 401 to arrive
    async with notified_daemon(stack, notify_socket, config):
        ready = await notify_socket.next("READY")
    assert ready["STATUS"].startswith("degraded: TTS provider refused: the API key was refused")
    assert "retrying" not in ready["STATUS"] and "sk-" not in ready["STATUS"]


async def test_a_wedged_audio_writer_stops_the_pings_until_it_recovers(
    paced_stack: Stack, notify_socket: NotifySocket, tmp_path: Path
) -> None:
    stack = paced_stack
    pulse = PulseAudio(tmp_path / "own-pulse")  # its own: this test freezes it
    (tmp_path / "own-pulse").mkdir()
    pulse.start()
    stack.capture.pulse_server = pulse.server
    try:
        async with notified_daemon(stack, notify_socket, stack.config()):
            await notify_socket.next("READY")
            async with watching(stack.broker.port) as w:
                await w.announce(json.dumps({"text": HOLD, "id": "long"}))
                await w.wait("playing", ann_id="long")
                assert pulse.proc is not None
                pulse.proc.send_signal(signal.SIGSTOP)  # the device stops taking frames
                try:  # pings stop once the write has been stuck for AUDIO_STALL_S
                    assert await pings_stop(notify_socket, within_s=AUDIO_STALL_S + 10)
                finally:
                    pulse.proc.send_signal(signal.SIGCONT)
                await notify_socket.next("WATCHDOG")  # and come back with the device
        log = stack.daemon_log.read_text()
        assert "watchdog" in log.lower() and "healthy again" in log
    finally:
        pulse.stop()
