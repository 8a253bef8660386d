"""``Speaker.speak(ann, start_at=...)``: a real Speaker, a real Fish live session and real ALSA
(a ``file`` PCM over ``null``, byte-exact): the instant goes to the first sound of the
announcement, the chime when there is one, else the speech."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import ormsgpack
import pytest
from aiohttp import web

from edgespeak.audio.alsa import AlsaSink
from edgespeak.base.announcement import Announcement
from edgespeak.base.events import Event
from edgespeak.config import Settings
from edgespeak.providers.fish import FishLiveClient
from edgespeak.sources.synthesis import Synthesizer
from edgespeak.speaking.chimes import Chimes
from edgespeak.speaking.speaker import Speaker
from edgespeak.wire import fish as fp
from harness.stack import capture_alsa_conf
from tests.helpers import serving_live

RATE = 22050
SPEECH = (np.arange(1, 2206) % 200 * 50 + 50).astype("<i2").tobytes()  # never 0


async def speak(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if ormsgpack.unpackb(msg.data)["event"] == "stop":
            await ws.send_bytes(fp.audio(SPEECH))
            await ws.send_bytes(fp.finish("stop"))
    return ws


@pytest.mark.parametrize("chime", [None, "doorbell"])
async def test_the_instant_goes_to_the_first_sound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chime: str | None
) -> None:
    out = tmp_path / "out.raw"
    env = capture_alsa_conf(tmp_path / "asound.conf", out)
    monkeypatch.setenv("ALSA_CONFIG_PATH", env["ALSA_CONFIG_PATH"])
    events: list[Event] = []
    sink = AlsaSink("default", fade_ms=0)
    try:
        async with serving_live(speak) as url, FishLiveClient(url) as tts:
            synth = Synthesizer(tts, "pcm", RATE, None)
            speaker = Speaker(Settings(tts={"url": url}), synth, url, sink, None, None,
                              events.append, Chimes(None))  # fmt: skip
            before = time.monotonic()
            start_at = before + 0.5
            done = await speaker.speak(Announcement(text="Hello.", chime=chime), start_at)
            after = time.monotonic()
    finally:
        await asyncio.to_thread(sink.close)
    assert (done.state, done.source) == ("finished", "stream"), done
    got = np.frombuffer(out.read_bytes(), "<i2")
    first = np.frombuffer(Chimes(None).pcm("doorbell", RATE) if chime else SPEECH, "<i2")
    own = int(np.flatnonzero(first)[0])  # the first sound's own leading zeros (the chime's)
    silence = int(np.flatnonzero(got)[0]) - own  # written before it
    # the null device has no delay: the silence is the time left when the sound came
    assert round((start_at - after) * RATE) <= silence <= round((start_at - before) * RATE)
    sound = got[silence:].tobytes()
    if chime:  # the speech follows the chime
        assert sound == first.tobytes() + SPEECH
    else:
        assert sound == SPEECH
