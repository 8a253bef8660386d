"""The phrase cache's disk I/O stays off the event loop, and the audio does not wait for it.

A real Fish-live-protocol aiohttp server, the real FishLiveClient, Synthesizer and
PhraseWarmer, a real PhraseCache on disk. Subclasses of the cache and its writer only note
which thread ran each of their methods (then do the real work), and the first one can be held
until the audio it tees has reached the listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict
from collections.abc import Collection
from pathlib import Path

import ormsgpack
from aiohttp import web

from edgespeak.config import Settings
from edgespeak.providers.fish import FishLiveClient
from edgespeak.providers.fish_request import provider_request
from edgespeak.sources.cache import CacheWriter, Entry, PhraseCache, phrase_key
from edgespeak.sources.synthesis import Synthesizer
from edgespeak.sources.warmer import PhraseWarmer
from edgespeak.wire import fish as fp
from tests.cache_support import pcm_for
from tests.helpers import serving_live

RATE = 22050
DOOR = "Someone is at the front door."
CHUNKS = [pcm_for(seed, frames=2205) for seed in range(3)]  # three 0.1 s chunks
HOLD_S = 5.0  # how long the held cache step waits for the listener before giving up


async def speak_chunks(request: web.Request) -> web.StreamResponse:
    """A Fish live session that answers ``stop`` with :data:`CHUNKS`, then ``finish``."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if ormsgpack.unpackb(msg.data)["event"] == "stop":
            for chunk in CHUNKS:
                await ws.send_bytes(fp.audio(chunk))
            await ws.send_bytes(fp.finish("stop"))
    return ws


class NotingCache(PhraseCache):
    """A real PhraseCache that notes the thread of each call; :meth:`writer` first waits (at
    most HOLD_S) for ``hold`` to be released."""

    def __init__(self, directory: Path, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(directory)
        self.threads: defaultdict[str, set[int]] = defaultdict(set)
        self.hold = threading.Event()
        self.held_too_long = False
        self.stored = asyncio.Event()
        self._loop = loop

    def note(self, method: str) -> None:
        self.threads[method].add(threading.get_ident())

    def writer(self, key: str, rate_hz: int, *, text: str, voice: str | None) -> CacheWriter | None:
        self.note("writer")
        if not self.hold.wait(HOLD_S):
            self.held_too_long = True
        return NotingWriter(self, key, rate_hz, text=text, voice=voice)

    def has(self, key: str) -> bool:
        self.note("has")
        found = super().has(key)
        if found:
            self._loop.call_soon_threadsafe(self.stored.set)
        return found

    def set_pinned(self, keys: Collection[str]) -> None:
        self.note("set_pinned")
        super().set_pinned(keys)


class NotingWriter(CacheWriter):
    def __init__(
        self, cache: NotingCache, key: str, rate_hz: int, *, text: str, voice: str | None
    ) -> None:
        self._noting = cache
        super().__init__(cache, key, rate_hz, text=text, voice=voice)

    def write(self, pcm: bytes) -> None:
        self._noting.note("write")
        super().write(pcm)

    def commit(self) -> Entry | None:
        self._noting.note("commit")
        return super().commit()


async def test_the_cache_copy_is_written_off_the_loop_and_after_the_audio_is_handed_on(
    tmp_path: Path,
) -> None:
    cache = NotingCache(tmp_path / "cache", asyncio.get_running_loop())
    async with serving_live(speak_chunks) as url, FishLiveClient(url) as tts:
        settings = Settings(tts={"url": url})
        key = phrase_key(settings, url, DOOR)
        synth = Synthesizer(tts, "pcm", RATE, cache)
        flight = synth.flight(key, DOOR, provider_request(settings, None), voice=None)
        heard = []
        async for chunk in flight.follow():
            heard.append(chunk)
            cache.hold.set()  # the listener has audio: the cache may create its file now
    assert not cache.held_too_long, "the first audio waited for the cache file to be created"
    assert heard == CHUNKS
    assert set(cache.threads) == {"writer", "write", "commit"}
    loop_thread = threading.get_ident()
    for method, threads in cache.threads.items():
        assert loop_thread not in threads, f"{method} ran on the event loop"
    stored = cache.get(key)
    assert stored is not None and stored.pcm == b"".join(CHUNKS)
    cache.close()


async def test_the_warmer_reads_and_pins_the_index_off_the_loop(tmp_path: Path) -> None:
    cache = NotingCache(tmp_path / "cache", asyncio.get_running_loop())
    cache.hold.set()  # nobody listens to a warming flight
    async with serving_live(speak_chunks) as url, FishLiveClient(url) as tts:
        settings = Settings(tts={"url": url}, cache={"phrases": [DOOR]})
        synth = Synthesizer(tts, "pcm", RATE, cache)
        warmer = PhraseWarmer(settings, synth, url, cache)
        running = asyncio.create_task(warmer.run(tts))
        try:
            await asyncio.wait_for(cache.stored.wait(), 30)  # has() saw the warmed entry
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
    assert {"has", "set_pinned"} <= set(cache.threads)
    loop_thread = threading.get_ident()
    for method, threads in cache.threads.items():
        assert loop_thread not in threads, f"{method} ran on the event loop"
    (entry,) = cache.entries()
    assert entry.pinned and entry.text == DOOR
    cache.close()
