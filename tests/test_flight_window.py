"""A streamed phrase is held in memory only while someone may still join it from its start.

A real Fish-live-protocol aiohttp server sends one chunk per permit the test gives it, to the
real FishLiveClient and Synthesizer (no cache): the follower and the server move in lockstep,
so what the flight holds is what it keeps for joiners, not a backlog.
"""

from __future__ import annotations

import asyncio

import ormsgpack
from aiohttp import web

from edgespeak.config import Settings
from edgespeak.providers.fish import FishLiveClient
from edgespeak.providers.fish_request import provider_request
from edgespeak.sources.synthesis import JOIN_WINDOW_BYTES, Synthesizer
from edgespeak.wire import fish as fp
from tests.cache_support import pcm_for
from tests.helpers import serving_live

RATE = 22050
CHUNK_FRAMES = 16384  # 32 KiB of PCM per chunk
STREAM_CHUNKS = 3 * JOIN_WINDOW_BYTES // (2 * CHUNK_FRAMES)  # three times the window


class LockstepServer:
    """Fish live sessions answering ``stop`` with STREAM_CHUNKS chunks, each sent once a
    permit is given; ``sessions`` counts the sessions started."""

    def __init__(self) -> None:
        self.permits: asyncio.Queue[None] = asyncio.Queue()
        self.sessions = 0

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if ormsgpack.unpackb(msg.data)["event"] == "stop":
                self.sessions += 1
                for seed in range(STREAM_CHUNKS):
                    await self.permits.get()
                    await ws.send_bytes(fp.audio(pcm_for(seed, CHUNK_FRAMES)))
                await ws.send_bytes(fp.finish("stop"))
        return ws


async def test_a_long_stream_holds_only_its_join_window() -> None:
    server = LockstepServer()
    async with serving_live(server.handle) as url, FishLiveClient(url) as tts:
        settings = Settings(tts={"url": url})
        synth = Synthesizer(tts, "pcm", RATE, None)
        flight = synth.flight("k", "A long story.", provider_request(settings, None), voice=None)
        held = []
        heard = 0
        server.permits.put_nowait(None)
        async for chunk in flight.follow():
            heard += len(chunk)
            held.append(flight.held_bytes)
            server.permits.put_nowait(None)  # the next chunk once this one is played
    assert heard == STREAM_CHUNKS * CHUNK_FRAMES * 2
    assert max(held) <= JOIN_WINDOW_BYTES + 2 * CHUNK_FRAMES * 2, (
        f"held {max(held)} bytes of a {heard}-byte stream"
    )
    assert flight.held_bytes == 0, "everything played is dropped once nobody can join"


async def test_a_request_joins_within_the_window_and_starts_afresh_after_it() -> None:
    server = LockstepServer()
    async with serving_live(server.handle) as url, FishLiveClient(url) as tts:
        settings = Settings(tts={"url": url})
        request = provider_request(settings, None)
        synth = Synthesizer(tts, "pcm", RATE, None)
        first = synth.flight("k", "A long story.", request, voice=None)
        mine = first.follow()
        server.permits.put_nowait(None)
        heard = [await anext(mine)]
        late = synth.flight("k", "A long story.", request, voice=None)
        assert late is first, "within the window the same phrase joins the flight"
        theirs = late.follow()
        assert await anext(theirs) == heard[0], "a joiner starts from the first chunk"
        while first.joinable:
            server.permits.put_nowait(None)
            heard.append(await anext(mine))
        again = synth.flight("k", "A long story.", request, voice=None)
        assert again is not first, "past the window the phrase gets a session of its own"
        assert again.task is not None
        again.task.cancel()  # before it connects: the server serves one session only
        heard_too = [await anext(theirs) for _ in heard[1:]]
        assert first.held_bytes == 0, "passed by both followers and unjoinable: dropped"
        for _ in range(STREAM_CHUNKS - len(heard)):
            server.permits.put_nowait(None)
        heard += [chunk async for chunk in mine]
        heard_too += [chunk async for chunk in theirs]
    expected = [pcm_for(seed, CHUNK_FRAMES) for seed in range(STREAM_CHUNKS)]
    assert heard == expected
    assert [heard[0], *heard_too] == expected, "the joiner got every chunk, in order"
    assert server.sessions == 1


async def test_shutdown_cancels_a_flight_past_its_window_too() -> None:
    server = LockstepServer()
    async with serving_live(server.handle) as url, FishLiveClient(url) as tts:
        settings = Settings(tts={"url": url})
        synth = Synthesizer(tts, "pcm", RATE, None)
        request = provider_request(settings, None)
        flight = synth.flight("k", "A long story.", request, voice=None, keep=True)
        mine = flight.follow()
        while flight.joinable:
            server.permits.put_nowait(None)
            await anext(mine)
        await mine.aclose()  # a cache-filling flight runs on without followers
        assert flight.task is not None and not flight.task.done()
        try:
            await synth.close()
            assert flight.task.done(), "close() left a flight past its window running"
        finally:
            flight.task.cancel()
            for _ in range(STREAM_CHUNKS):  # the abandoned session's handler runs out
                server.permits.put_nowait(None)
