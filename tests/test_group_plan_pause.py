"""A provider that pauses mid-phrase (between sentences, or a slow cloud) while the followers
still have seconds of relayed audio to play: that is not the leader gone. Real daemons, a real
aiohttp provider speaking espeak-ng, byte-exact ALSA captures."""

from __future__ import annotations

import asyncio
from pathlib import Path

import ormsgpack
from aiohttp import WSMsgType, web

from edgespeak.sources.espeak import EspeakEngine
from edgespeak.wire import fish as fp
from tests.conftest import Broker
from tests.group_plan_nodes import group_nodes, sound, watch_group
from tests.helpers import serving_live

TEXT = "The laundry in the basement is done and the dryer is free now. Please fetch it soon."
FIRST_FRAMES = 2 * 22050  # two seconds of audio before the pause


async def test_a_provider_pause_with_audio_buffered_is_not_the_leader_gone(
    broker: Broker, tmp_path: Path
) -> None:
    engine = EspeakEngine()
    paused = asyncio.Event()
    resume = asyncio.Event()
    sessions = 0

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal sessions
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        text = ""
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                continue
            body = ormsgpack.unpackb(msg.data)
            if body["event"] == "text":
                text += body["text"]
            elif body["event"] == "stop":  # one synthesis (every daemon keeps a socket open)
                sessions += 1
                pcm = b"".join([c async for c in engine.synthesize(text.strip())])
                await ws.send_bytes(fp.audio(pcm[: 2 * FIRST_FRAMES]))
                paused.set()
                await resume.wait()
                await ws.send_bytes(fp.audio(pcm[2 * FIRST_FRAMES :]))
                await ws.send_bytes(fp.finish("stop"))
        return ws

    ids = ["alpha", "bravo"]
    async with serving_live(handle) as url:
        with group_nodes(ids, broker, url, tmp_path) as nodes:
            async with watch_group(broker, ids) as watch:
                await watch.announce_all({"text": TEXT, "id": "pause-1"})
                await paused.wait()
                # The pause under test: longer than twice margin_stream_ms (0.5 s), shorter
                # than the two seconds the follower has to play meanwhile.
                await asyncio.sleep(1.0)
                resume.set()
                finals = await watch.finals(ids, "pause-1")
    assert (finals["alpha"]["state"], finals["alpha"]["source"]) == ("finished", "stream")
    assert (finals["bravo"]["state"], finals["bravo"]["source"]) == ("finished", "relay"), finals
    assert sessions == 1
    alpha, bravo = (sound(node.capture.read()) for node in nodes)
    assert alpha and alpha == bravo
