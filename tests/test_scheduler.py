"""Scheduling end to end: priorities, preemption, order, TTL, duplicates and stop.

The daemon talks to a provider run by the test: a real aiohttp WebSocket server speaking the
Fish live protocol with the real espeak-ng engine, which holds any text starting with "Hold"
after its first audio until the test releases it. So "an announcement is playing" is a state
the test controls, not a race against a fast unpaced ALSA capture.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import ormsgpack
from aiohttp import WSMsgType, web

from edgespeak.sources.espeak import EspeakEngine
from edgespeak.wire import fish as fp
from tests.conftest import Stack, Watcher
from tests.helpers import serving_live

HOLD = "Hold on, this is a long weather report for the whole week ahead."
DOOR = "Someone is at the front door."
SMOKE = "Smoke detected."


@dataclass
class HeldProvider:
    url: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)


async def espeak_all(engine: EspeakEngine, text: str) -> bytes:
    return b"".join([pcm async for pcm in engine.synthesize(text)])


@contextlib.asynccontextmanager
async def held_provider() -> AsyncIterator[HeldProvider]:
    engine = EspeakEngine()
    provider = HeldProvider()

    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        text = ""
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                continue
            body = ormsgpack.unpackb(msg.data)
            if body["event"] == "text":
                text += body["text"]
            elif body["event"] == "stop":
                pcm = await espeak_all(engine, text.strip())
                if text.strip().startswith("Hold"):
                    await ws.send_bytes(fp.audio(pcm[:22050]))  # half a second, then hold
                    await provider.release.wait()
                    pcm = pcm[22050:]
                await ws.send_bytes(fp.audio(pcm))
                await ws.send_bytes(fp.finish("stop"))
                text = ""
        return ws

    async with serving_live(handle) as url:
        provider.url = url
        try:
            yield provider
        finally:
            provider.release.set()


async def send(w: Watcher, text: str, ann_id: str, **fields: object) -> None:
    await w.announce(json.dumps({"text": text, "id": ann_id, **fields}))
    await w.wait("received", "failed", ann_id=ann_id)


async def test_high_interrupts_normal_and_critical_interrupts_high(stack: Stack) -> None:
    async with held_provider() as provider, stack.daemon(stack.config(tts_url=provider.url)) as w:
        await send(w, HOLD, "weather")
        await w.wait("playing", ann_id="weather")
        await send(w, DOOR, "door", priority="high")
        door = await w.wait("finished", "failed", ann_id="door")
        weather = await w.wait("interrupted", "finished", "failed", ann_id="weather")

        await send(w, HOLD + " Again.", "weather-2", priority="high")
        await w.wait("playing", ann_id="weather-2")
        await send(w, SMOKE, "smoke", priority="critical")
        smoke = await w.wait("finished", "failed", ann_id="smoke")
        weather2 = await w.wait("interrupted", "finished", "failed", ann_id="weather-2")
    assert weather["state"] == "interrupted" and "by door (high priority)" in weather["error"]
    assert door["state"] == "finished"
    assert weather2["state"] == "interrupted" and "by smoke (critical" in weather2["error"]
    assert smoke["state"] == "finished"
    # The interrupted one was never finished later.
    assert "finished" not in w.states("weather") + w.states("weather-2")


async def test_equal_priorities_keep_order_and_higher_ones_go_first(stack: Stack) -> None:
    async with held_provider() as provider, stack.daemon(stack.config(tts_url=provider.url)) as w:
        await send(w, HOLD, "weather", priority="critical")
        await w.wait("playing", ann_id="weather")
        for ann_id, priority in [("n1", "normal"), ("l1", "low"), ("n2", "normal"),
                                 ("h1", "high"), ("n3", "normal")]:  # fmt: skip
            await send(w, f"Message {ann_id}.", ann_id, priority=priority)
        provider.release.set()
        await w.wait("finished", ann_id="l1")
    played = [e["id"] for e in w.events if e["state"] == "playing"]
    assert played == ["weather", "h1", "n1", "n2", "n3", "l1"]


async def test_expired_announcements_are_never_spoken(stack: Stack) -> None:
    async with held_provider() as provider, stack.daemon(stack.config(tts_url=provider.url)) as w:
        await send(w, HOLD, "weather", priority="critical")
        await w.wait("playing", ann_id="weather")
        await send(w, "Stale news.", "stale", ttl_s=0.05)
        await send(w, DOOR, "fresh", ttl_s=60)
        await asyncio.sleep(0.1)  # the stimulus: let the stale one's ttl pass while it waits
        provider.release.set()
        expired = await w.wait("expired", "playing", ann_id="stale")
        fresh = await w.wait("finished", "failed", ann_id="fresh")
    assert expired["state"] == "expired" and "ttl_s 0.05" in expired["error"]
    assert w.states("stale") == ["received", "expired"]
    assert fresh["state"] == "finished"


async def test_duplicate_ids_are_spoken_once(stack: Stack) -> None:
    async with stack.daemon() as w:
        payload = json.dumps({"text": DOOR, "id": "dup-1"})
        await w.announce(payload)
        await w.announce(payload)
        await w.say("Next one.", "after-1")
    assert w.states("dup-1") == ["received", "playing", "finished"]
    assert stack.capture.read() == await stack.sent(DOOR) + await stack.sent("Next one.")
    assert "ignoring duplicate announcement id dup-1" in stack.daemon_log.read_text()


async def test_an_id_refused_or_dropped_for_a_full_queue_is_spoken_when_sent_again(
    stack: Stack,
) -> None:
    """Only an accepted id is remembered: one that failed with "queue full" (refused, or
    dropped for a higher-priority newcomer) was never spoken, so sending it again once the
    queue has room speaks it instead of ignoring it without an event."""
    async with held_provider() as provider:
        config = stack.config(tts_url=provider.url)
        config.write_text(config.read_text() + "[daemon]\nqueue_max = 2\n")
        async with stack.daemon(config) as w:
            await send(w, HOLD, "weather", priority="critical")
            await w.wait("playing", ann_id="weather")
            await send(w, "Bins tonight.", "bins", priority="low")
            await send(w, DOOR, "door")
            await send(w, SMOKE, "smoke", priority="low")  # queue full: refused
            await send(w, "Doorbell.", "bell", priority="high")  # full: "bins" is dropped
            provider.release.set()
            await w.wait("finished", ann_id="door")
            again = []
            for text, ann_id in ((SMOKE, "smoke"), ("Bins.", "bins")):
                after = len(w.events)
                await w.announce(json.dumps({"text": text, "id": ann_id}))
                again.append(await w.wait("finished", "failed", ann_id=ann_id, after=after,
                                          timeout_s=10))  # fmt: skip
    refused = next(e for e in w.events if e["id"] == "smoke")
    dropped = next(e for e in w.events if e["id"] == "bins" and e["state"] == "failed")
    assert refused["error"] == "queue full (2 announcements waiting)"
    assert dropped["error"] == "dropped: queue full and bell (high priority) came in"
    assert [e["state"] for e in again] == ["finished", "finished"]
    assert w.states("smoke") == ["failed", "received", "playing", "finished"]
    assert w.states("bins") == ["received", "failed", "received", "playing", "finished"]


async def test_stop_interrupts_and_clears_the_queue(stack: Stack) -> None:
    async with held_provider() as provider, stack.daemon(stack.config(tts_url=provider.url)) as w:
        await send(w, HOLD, "weather")
        await w.wait("playing", ann_id="weather")
        await send(w, DOOR, "q1")
        await send(w, SMOKE, "q2", priority="low")
        await w.client.publish("edgespeak/testnode/stop", b"", qos=1)
        for ann_id in ("weather", "q1", "q2"):
            await w.wait("interrupted", ann_id=ann_id)
        after = await w.say(DOOR, "after-stop")
    assert after["state"] == "finished"
    assert w.states("q1") == ["received", "interrupted"]
    assert w.states("q2") == ["received", "interrupted"]
    assert "finished" not in w.states("weather")


async def test_event_times_follow_the_announcements_life(stack: Stack) -> None:
    async with stack.daemon() as w:
        await w.say(DOOR, "t-1")
    times = {e["state"]: e["at"] for e in w.events if e["id"] == "t-1"}
    assert times["received"] <= times["playing"] <= times["finished"]
    assert times["finished"] - times["received"] < 30
