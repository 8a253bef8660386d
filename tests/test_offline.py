"""The phrase cache and the offline fallback with real parts: never silent when asked to speak.

Real Mosquitto, real ``edgespeak serve`` (stopped to take the provider away), real daemon,
real espeak-ng for the fallback, ALSA file capture; scripted aiohttp servers stand in for a
provider that accepts and never answers, or that dies in the middle of a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import ormsgpack
import pytest
from aiohttp import WSMsgType, web

from edgespeak.config import Settings
from edgespeak.providers.fish import FishLiveClient
from edgespeak.providers.fish_request import provider_request
from edgespeak.sources.cache import PhraseCache, phrase_key
from edgespeak.sources.synthesis import Synthesizer
from edgespeak.wire import fish as fp
from tests.conftest import Stack, TtsServer, daemon_process, logged, watching
from tests.helpers import espeak_pcm, server_audio, serving_live

DOOR = "Someone is at the front door."
SMOKE = "Smoke detected in the kitchen. Please leave the house."
WASHER = "The washing machine has finished. Please empty it."


@contextlib.asynccontextmanager
async def scripted_provider(*, audio: bytes = b"") -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A provider that accepts, answers ``start`` with ``audio`` (if any) and then never ends
    the session. Yields its URL and an event set once it sent that audio."""
    sent = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.BINARY and ormsgpack.unpackb(msg.data)["event"] == "start":
                if audio:
                    await ws.send_bytes(fp.audio(audio))
                    sent.set()
        return ws

    async with serving_live(handle) as url:
        yield url, sent


async def appeared(directory: Path, pattern: str, timeout_s: float = 10.0) -> list[Path]:
    """The files matching ``pattern`` in ``directory`` once there is one (polled, bounded by
    ``timeout_s`` seconds; [] if none appeared)."""

    def poll() -> list[Path]:
        deadline = time.monotonic() + timeout_s
        while not (found := list(directory.glob(pattern))) and time.monotonic() < deadline:
            time.sleep(0.01)  # polls the real condition, bounded by the deadline
        return found

    return await asyncio.to_thread(poll)


async def test_pinned_phrases_play_byte_identical_with_the_server_stopped(stack: Stack) -> None:
    expected = [await stack.sent(DOOR), await stack.sent(SMOKE)]
    async with stack.daemon(stack.config(phrases=(DOOR, SMOKE))) as w:
        await logged(stack.daemon_log, "2 of 2 pinned phrases ready")
        stack.tts.stop()
        door = await w.say(DOOR, "door-1")
        smoke = await w.say(SMOKE, "smoke-1")
    for event in (door, smoke):
        assert (event["state"], event["source"]) == ("finished", "cache"), event
    assert stack.capture.read() == b"".join(expected)
    cache = PhraseCache(stack.cache_dir)
    assert sorted(e.text for e in cache.entries() if e.pinned) == sorted([DOOR, SMOKE])


async def test_uncached_text_is_spoken_by_the_fallback_until_the_provider_returns(
    stack: Stack,
) -> None:
    stack.tts.stop()
    async with stack.daemon() as w:
        down = await w.say(WASHER, "down-1")
        fallback_audio = stack.capture.read()
        stack.tts.start()
        back = await w.say(WASHER, "back-1")
    assert (down["state"], down["source"]) == ("finished", "fallback"), down
    assert "cannot connect" in down["reason"]
    assert down["ttfa_ms"] < 5000  # refused at once: no need to wait for the timeout
    assert fallback_audio == espeak_pcm(WASHER)
    # The provider is used again at once, and the fallback's audio was not cached for it.
    assert (back["state"], back["source"]) == ("finished", "stream"), back
    assert stack.capture.read()[len(fallback_audio) :] == await stack.sent(WASHER)
    log = stack.daemon_log.read_text()
    assert "speaking down-1 with the fallback engine: cannot connect" in log


async def test_provider_that_never_answers_falls_back_after_the_timeout(stack: Stack) -> None:
    async with scripted_provider() as (url, _):
        config = stack.config(tts_url=url, first_audio_timeout_ms=600)
        async with stack.daemon(config) as w:
            done = await w.say(DOOR, "slow-1")
    assert (done["state"], done["source"]) == ("finished", "fallback"), done
    assert "no audio from the provider within 0.6 s" in done["reason"]
    assert 600 <= done["ttfa_ms"] < 600 + 3000
    assert stack.capture.read() == espeak_pcm(DOOR)


async def test_provider_error_before_audio_falls_back_with_the_servers_reason(
    stack: Stack,
) -> None:
    async with stack.daemon() as w:
        await w.announce(json.dumps({"text": DOOR, "voice": "no-such-voice", "id": "v-1"}))
        done = await w.wait("finished", "failed", ann_id="v-1")
    assert (done["state"], done["source"]) == ("finished", "fallback"), done
    assert "unknown voice 'no-such-voice'" in done["reason"]
    assert stack.capture.read() == espeak_pcm(DOOR)


@pytest.mark.parametrize("damage", ["truncated", "zero-length", "garbage"])
async def test_damaged_entry_is_detected_and_synthesised_again(stack: Stack, damage: str) -> None:
    async with stack.daemon() as w:
        await w.say(DOOR, "door-1")
        [entry] = stack.cache_dir.glob("*.wav")
        data = entry.read_bytes()
        entry.write_bytes(
            {"truncated": data[:1000], "zero-length": b"", "garbage": bytes(len(data))}[damage]
        )
        again = await w.say(DOOR, "door-2")
        third = await w.say(DOOR, "door-3")
    assert (again["state"], again["source"]) == ("finished", "stream"), again
    assert (third["state"], third["source"]) == ("finished", "cache"), third
    assert stack.capture.read() == await stack.sent(DOOR) * 3  # never silence, never garbage
    assert "dropped bad entry" in stack.daemon_log.read_text()


async def test_same_phrase_twice_at_once_is_synthesised_once(
    tts_server: TtsServer, tmp_path: Path
) -> None:
    settings = Settings(tts={"url": tts_server.url}, cache={"dir": tmp_path / "cache"})
    cache = PhraseCache(tmp_path / "cache")
    key = phrase_key(settings, tts_server.url, SMOKE, None)
    request = provider_request(settings, None)
    server_log = tts_server.workdir / "server.log"
    before = server_log.read_text().count("session finished")
    async with FishLiveClient(tts_server.url) as tts:
        synth = Synthesizer(tts, "pcm", 22050, cache)
        first = synth.flight(key, SMOKE, request, voice=None)
        second = synth.flight(key, SMOKE, request, voice=None)

        async def collect(flight_pcm: AsyncIterator[bytes]) -> bytes:
            return b"".join([chunk async for chunk in flight_pcm])

        a, b = await asyncio.gather(collect(first.follow()), collect(second.follow()))
    assert first is second
    assert a == b == await server_audio(tts_server.url, SMOKE, fmt="pcm", rate=22050)
    # One session for the two requests (server_audio above adds one of its own).
    assert server_log.read_text().count("session finished") - before == 2
    stored = cache.get(key)
    assert stored is not None and stored.pcm == a


async def test_daemon_killed_mid_stream_leaves_no_entry_that_plays(stack: Stack) -> None:
    pcm = espeak_pcm(WASHER)[:8820]  # 0.2 s of real speech, then the provider stalls
    async with scripted_provider(audio=pcm) as (url, sent):
        config = stack.config(tts_url=url)
        with daemon_process(config, stack.capture, stack.workdir) as proc:
            async with watching(stack.broker.port) as w:
                await w.announce(json.dumps({"text": WASHER, "id": "long-1"}))
                await w.wait("playing", ann_id="long-1")
                await sent.wait()
                # The cache copy starts on its own thread once the audio is handed on.
                assert await appeared(stack.cache_dir, ".*.tmp"), "no cache write under way"
                proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(proc.wait)
    # The provider is gone now (its URL refuses): the same text must not come from the cache.
    async with stack.daemon(stack.config(tts_url=url)) as w:
        again = await w.say(WASHER, "long-2")
    assert (again["state"], again["source"]) == ("finished", "fallback"), again
    assert PhraseCache(stack.cache_dir).entries() == []


async def test_phrases_are_warmed_once_the_provider_comes_back(stack: Stack) -> None:
    stack.tts.stop()
    expected = espeak_pcm(DOOR)  # what the fallback says meanwhile
    async with stack.daemon(stack.config(phrases=(DOOR,))) as w:
        await logged(stack.daemon_log, "0 of 1 pinned phrases ready")
        early = await w.say(DOOR, "door-early")
        stack.tts.start()
        await logged(stack.daemon_log, "1 of 1 pinned phrases ready")
        stack.tts.stop()
        late = await w.say(DOOR, "door-late")
    assert (early["state"], early["source"]) == ("finished", "fallback"), early
    assert (late["state"], late["source"]) == ("finished", "cache"), late
    stack.tts.start()
    assert stack.capture.read() == expected + await stack.sent(DOOR)
