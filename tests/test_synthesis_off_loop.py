"""A provider's Opus is decoded off the event loop: a provider faster than real time delivers
seconds of audio at once, and libopus on the loop held it for all of them.

A real Fish-live-protocol aiohttp server sends a real Ogg Opus stream (edgespeak's encoder) at
once to the real FishLiveClient and Synthesizer; a profile hook (no stand-in) notes which
thread runs each call of the real decoder's ``feed``.
"""

from __future__ import annotations

import sys
import threading
from types import FrameType
from typing import Any

import ormsgpack
from aiohttp import web

from edgespeak.audio.opus import OPUS_RATE_HZ, OggOpusDecoder, OggOpusEncoder
from edgespeak.config import Settings
from edgespeak.providers.fish import FishLiveClient
from edgespeak.providers.fish_request import provider_request
from edgespeak.sources.synthesis import Synthesizer
from edgespeak.wire import fish as fp
from tests.cache_support import pcm_for
from tests.helpers import serving_live

SECONDS = 5
ENCODER = OggOpusEncoder(serial=3)
STREAM = (
    ENCODER.header() + ENCODER.encode(pcm_for(1, frames=SECONDS * OPUS_RATE_HZ)) + ENCODER.finish()
)


async def speak_opus(request: web.Request) -> web.StreamResponse:
    """A Fish live session answering ``stop`` with all of STREAM at once, then ``finish``."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if ormsgpack.unpackb(msg.data)["event"] == "stop":
            for start in range(0, len(STREAM), 4000):
                await ws.send_bytes(fp.audio(STREAM[start : start + 4000]))
            await ws.send_bytes(fp.finish("stop"))
    return ws


async def test_opus_from_the_provider_is_decoded_off_the_event_loop() -> None:
    feeding: list[int] = []
    feed = OggOpusDecoder.feed.__code__

    def note(frame: FrameType, event: str, _: Any) -> None:
        if event == "call" and frame.f_code is feed:
            feeding.append(threading.get_ident())

    async with serving_live(speak_opus) as url, FishLiveClient(url) as tts:
        settings = Settings(tts={"url": url, "format": "opus"})
        synth = Synthesizer(tts, "opus", OPUS_RATE_HZ, None)
        flight = synth.flight("k", "A long story.", provider_request(settings, None), voice=None)
        threading.setprofile(note)  # threads started from now on (the loop's executor's)
        sys.setprofile(note)
        try:
            heard = b"".join([chunk async for chunk in flight.follow()])
        finally:
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]
    assert len(heard) == SECONDS * OPUS_RATE_HZ * 2
    assert feeding, "the decoder was never seen"
    assert threading.get_ident() not in feeding, "Opus was decoded on the event loop's thread"
