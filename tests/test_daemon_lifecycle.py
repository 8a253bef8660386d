"""The daemon's lifecycle with a real broker: a clean stop reports every announcement before
``offline``, and a task that crashes still takes the daemon down cleanly (non-zero exit,
``offline`` published, the rest cancelled).

Order is checked as the broker delivers it to one subscriber of both the event and the
availability topic (one connection: the broker keeps the order it published them in).
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import aiomqtt

from tests.conftest import Stack, daemon_process, watching
from tests.test_homeassistant_live import Msg, inbox
from tests.test_scheduler import DOOR, HOLD, SMOKE, held_provider, send

AVAILABILITY = "edgespeak/testnode/availability"
EVENT = "edgespeak/testnode/event"


def is_offline(m: Msg) -> bool:
    return m.topic == AVAILABILITY and m.payload == b"offline"


async def exited(proc: subprocess.Popen[bytes], timeout_s: float = 20) -> int:
    return await asyncio.to_thread(proc.wait, timeout_s)


async def test_stop_reports_the_playing_and_waiting_ones_before_offline(stack: Stack) -> None:
    async with held_provider() as provider:
        config, port = stack.config(tts_url=provider.url), stack.broker.port
        with daemon_process(config, stack.capture, stack.workdir) as proc:
            async with watching(port) as w, inbox(port, EVENT, AVAILABILITY) as box:
                await send(w, HOLD, "weather")
                await w.wait("playing", ann_id="weather")
                await send(w, DOOR, "door")
                await send(w, SMOKE, "smoke", priority="low")
                proc.terminate()  # SIGTERM, as systemd stops it
                code = await exited(proc)
                offline = await box.wait_for(is_offline)
    assert code == 0
    events = [m.json() for m in box.messages[:offline] if m.topic == EVENT]
    last = {e["id"]: e for e in events}
    assert {k: (e["state"], e.get("error")) for k, e in last.items()} == {
        "weather": ("interrupted", "stopped (the daemon is stopping)"),
        "door": ("interrupted", "stopped before it played (the daemon is stopping)"),
        "smoke": ("interrupted", "stopped before it played (the daemon is stopping)"),
    }
    assert box.messages[offline + 1 :] == [], "nothing after offline"


async def test_a_crashed_task_takes_the_daemon_down_non_zero_with_offline(
    stack: Stack, tmp_path: Path
) -> None:
    """The broker link's task crashes for real: its password file became unreadable, which
    the next connection attempt finds (ConfigError, not retried). The broker is told to drop
    the daemon by a client taking over its client id; the daemon exits 1 saying why, the rest
    cancelled cleanly, and availability reads ``offline`` (the will: the link was down)."""
    secret = tmp_path / "mqtt_password"
    secret.write_text("any password\n")  # the test broker takes anyone
    config = stack.config(mqtt={"username": "edgespeak", "password_file": str(secret)})
    port = stack.broker.port
    with daemon_process(config, stack.capture, stack.workdir) as proc:
        async with watching(port) as w, inbox(port, AVAILABILITY) as box:
            assert (await w.say(DOOR, "before"))["state"] == "finished"
            secret.unlink()
            async with aiomqtt.Client("127.0.0.1", port, identifier="edgespeak-testnode"):
                await box.wait_for(is_offline)  # the daemon's connection was taken over
            code = await exited(proc)
    assert code == 1
    log = stack.daemon_log.read_text()
    assert "CRITICAL edgespeak.daemon: a daemon task crashed: ConfigError: cannot read secret " \
        f"file {secret}" in log  # fmt: skip
    assert "Task was destroyed but it is pending" not in log
    assert "exception was never retrieved" not in log
