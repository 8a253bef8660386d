"""The broker link against a real Mosquitto: MQTT 5 message expiry caps an announcement's TTL,
and the persistent session delivers what was queued while the daemon was away exactly once."""

from __future__ import annotations

import asyncio
import re
import time

from tests.conftest import Stack, daemon_process, logged, watching
from tests.test_broker import (
    DOOR,
    WASHER,
    announce_v5,
    collecting,
    finished_count,
    reconfigure,
    v5_publisher,
)
from tests.test_scheduler import HOLD, held_provider, send


async def test_message_expiry_caps_the_announcement_ttl(stack: Stack) -> None:
    async with held_provider() as provider, stack.daemon(stack.config(tts_url=provider.url)) as w:
        await send(w, HOLD, "weather", priority="critical")
        await w.wait("playing", ann_id="weather")
        async with v5_publisher(stack.broker.port) as pub:
            await announce_v5(pub, "by-expiry", "Short lived.", expiry_s=2)  # default ttl 60 s
            await announce_v5(pub, "by-ttl", "Shorter still.", expiry_s=60, ttl_s=0.05)
            await announce_v5(pub, "fresh", DOOR, expiry_s=60, ttl_s=30)
        for ann_id in ("by-expiry", "by-ttl", "fresh"):
            await w.wait("received", ann_id=ann_id)
        await asyncio.sleep(2.2)  # the stimulus: let the 2 s message expiry pass while waiting
        provider.release.set()
        by_expiry = await w.wait("expired", "playing", ann_id="by-expiry")
        by_ttl = await w.wait("expired", "playing", ann_id="by-ttl")
        fresh = await w.wait("finished", "failed", ann_id="fresh")
    # Mosquitto sends the remaining interval in whole seconds: 2, or 1 past a second boundary.
    assert by_expiry["state"] == "expired", by_expiry
    assert re.search(r"ttl_s [12]$", by_expiry["error"]), by_expiry
    assert by_ttl["state"] == "expired" and by_ttl["error"].endswith("ttl_s 0.05"), by_ttl
    assert fresh["state"] == "finished", fresh
    assert w.states("by-expiry") == ["received", "expired"]


async def test_persistent_session_delivers_what_was_queued_once_across_restarts(
    stack: Stack,
) -> None:
    """The daemon crashes; a QoS 1 announcement is published while it is away; the broker
    restarts (persistence on); two more are published, one with a 1 s message expiry; the
    daemon comes back after that expiry: each queued one is spoken exactly once, the expired
    one never reaches it."""
    reconfigure(stack, persistence=True)
    config = stack.config()
    with daemon_process(config, stack.capture, stack.workdir) as proc:
        async with watching(stack.broker.port) as w:
            assert (await w.say(DOOR, "before"))["state"] == "finished"
        proc.kill()  # a crash: no DISCONNECT, the broker keeps the session
        proc.wait()
    # Published before the broker saw the socket close, a message would go out at once to
    # the dead connection: in flight, it is resent after reconnect whatever its expiry.
    await logged(stack.broker.log, "Client edgespeak-testnode closed its connection.")
    async with v5_publisher(stack.broker.port) as pub:
        await announce_v5(pub, "queued-1", "First while away.")
    stack.broker.restart()  # saved and reloaded: the session, its subscriptions and queue
    # The expiring one is published after the restart: Mosquitto 2.0.11 restores a message
    # that expires in the very second of the restart without any expiry (spoken after all).
    async with v5_publisher(stack.broker.port) as pub:
        await announce_v5(pub, "expired-away-7", "Expires while away.", expiry_s=1)
        published = time.monotonic()
        await announce_v5(pub, "queued-2", "Second while away.")
    # The stimulus: let the 1 s expiry pass. Mosquitto counts whole seconds of wall time and
    # still delivers a message in the second it expires (remaining 0, sent without the
    # property), so "past" means 2 s after publishing.
    await asyncio.sleep(max(0.0, published + 2.2 - time.monotonic()))
    async with collecting(stack.broker.port) as w:
        with daemon_process(config, stack.capture, stack.workdir):
            for ann_id in ("queued-1", "queued-2"):
                await w.wait("finished", "failed", ann_id=ann_id)
            after = len(w.events)
            done = await w.say(WASHER, "sentinel")  # anything redelivered would be before it
    assert done["state"] == "finished"
    assert finished_count(w, "queued-1") == finished_count(w, "queued-2") == 1, w.events
    assert w.states("expired-away-7") == [], w.events
    assert all(e.get("id") == "sentinel" for e in w.events[after:]), w.events[after:]
    log = stack.daemon_log.read_text()
    assert log.count("connected to broker") == 2 and "expired-away-7" not in log
