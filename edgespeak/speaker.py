"""Speak one announcement: cache hit or provider stream → decoder → ALSA, with events.

The streamed path tees decoded PCM into the phrase cache; the entry is committed only after
the provider's ``finish`` (reason ``stop``) and a clean drain. Events: ``playing`` when the
first frame is handed to ALSA (with ``ttfa_ms``), then ``finished`` or ``failed``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable

from edgespeak.announcement import Announcement
from edgespeak.audio.alsa import AlsaSink, Playback, Utterance
from edgespeak.audio.formats import make_decoder
from edgespeak.cache import CacheWriter, PhraseCache, cache_key
from edgespeak.config import Settings
from edgespeak.errors import EdgespeakError, TtsProtocolError
from edgespeak.events import Event, Source
from edgespeak.tts import fish_protocol as fp
from edgespeak.tts.fish import FishLiveClient

log = logging.getLogger(__name__)
Publish = Callable[[Event], None]


class Speaker:
    """Turns announcements into sound on ``sink``, publishing events through ``publish``."""

    def __init__(
        self,
        settings: Settings,
        tts: FishLiveClient,
        sink: AlsaSink,
        cache: PhraseCache | None,
        publish: Publish,
    ) -> None:
        self._settings = settings
        self._tts = tts
        self._sink = sink
        self._cache = cache
        self._publish = publish

    def _key(self, ann: Announcement) -> str:
        tts = self._settings.tts
        return cache_key(
            provider="fish",
            endpoint=self._tts.url,
            model=tts.model,
            voice=ann.voice or tts.reference_id,
            format=tts.format,
            sample_rate=tts.rate_hz,
            text=ann.text,
        )

    async def speak(self, ann: Announcement) -> Event:
        """Play ``ann``; returns the final event (``finished`` or ``failed``), already published.

        Never raises for a failure of the provider, the audio device, the format or the cache.
        """
        key = self._key(ann)
        cached = self._cache.get(key) if self._cache is not None else None
        source: Source = "cache" if cached is not None else "stream"
        rate: Callable[[], int | None]
        try:
            if cached is not None:
                pcm, rate = _aiter(cached.chunks()), (lambda: cached.rate_hz)
                playback = await self._play(ann, source, pcm, rate, None)
            else:
                pcm, rate = self._decoded(ann)
                tee = _CacheTee(self._cache, key) if self._cache is not None else None
                playback = await self._play(ann, source, pcm, rate, tee)
                if tee is not None:
                    tee.commit()
        except EdgespeakError as exc:
            return self.fail(ann, str(exc), source)
        first = playback.first_frame_at
        event = Event(
            ann.id,
            "finished",
            source=source,
            ttfa_ms=_ttfa_ms(ann, first) if first is not None else None,
            duration_s=round(playback.duration_s, 3),
        )
        log.info(
            "spoke %s from %s: ttfa %.0f ms, %.2f s",
            ann.id,
            source,
            event.ttfa_ms or 0,
            playback.duration_s,
        )
        self._publish(event)
        return event

    def _decoded(self, ann: Announcement) -> tuple[AsyncIterator[bytes], Callable[[], int | None]]:
        """The provider stream decoded to PCM, and a getter for its rate (known by first PCM)."""
        tts = self._settings.tts
        request = fp.build_request(
            format=tts.format,
            sample_rate=tts.sample_rate,
            reference_id=ann.voice or tts.reference_id,
        )
        decoder = make_decoder(tts.format, tts.rate_hz)

        async def pcm() -> AsyncIterator[bytes]:
            async for chunk in self._tts.stream(ann.text, request):
                if out := decoder.feed(chunk):
                    yield out
            if tail := decoder.finish():
                yield tail

        return pcm(), lambda: decoder.rate_hz

    async def _play(
        self,
        ann: Announcement,
        source: Source,
        pcm: AsyncIterator[bytes],
        rate: Callable[[], int | None],
        tee: _CacheTee | None,
    ) -> Playback:
        """Write ``pcm`` to the sink as it arrives; drain; abort the sound on any failure."""
        utt: Utterance | None = None
        playing: asyncio.Task[None] | None = None
        try:
            async for chunk in pcm:
                if utt is None:
                    rate_hz = rate()
                    assert rate_hz is not None, "decoders know their rate once they yield PCM"
                    utt = await self._sink.begin(rate_hz)
                    playing = asyncio.create_task(self._announce_playing(ann, source, utt))
                await self._sink.write(utt, chunk)
                if tee is not None:
                    tee.write(chunk, utt.playback.rate_hz)
            if utt is None:
                raise TtsProtocolError("the provider finished without sending audio")
            return await self._sink.end(utt)
        except BaseException:
            if utt is not None:
                await self._sink.abort(utt)
            if tee is not None:
                tee.discard()
            raise
        finally:
            if playing is not None:
                await playing

    async def _announce_playing(self, ann: Announcement, source: Source, utt: Utterance) -> None:
        try:
            first = await utt.first_frame
        except EdgespeakError:
            return
        self._publish(Event(ann.id, "playing", source=source, ttfa_ms=_ttfa_ms(ann, first)))

    def fail(self, ann: Announcement, error: str, source: Source | None = None) -> Event:
        """Log and publish a ``failed`` event for ``ann``; returns it."""
        log.error("announcement %s failed: %s", ann.id, error)
        event = Event(ann.id, "failed", source=source, error=error)
        self._publish(event)
        return event


def _ttfa_ms(ann: Announcement, first_frame_at: float) -> float:
    """Milliseconds from MQTT receipt to the first frame handed to ALSA."""
    return round((first_frame_at - ann.received_at) * 1000, 1)


class _CacheTee:
    """Copies a stream's PCM into the phrase cache; a cache failure only stops the copy."""

    def __init__(self, cache: PhraseCache, key: str) -> None:
        self._cache = cache
        self._key = key
        self._writer: CacheWriter | None = None
        self._failed = False

    def write(self, pcm: bytes, rate_hz: int) -> None:
        if self._failed:
            return
        try:
            if self._writer is None:
                self._writer = self._cache.writer(self._key, rate_hz)
                if self._writer is None:
                    self._failed = True
                    return
            self._writer.write(pcm)
        except OSError as exc:
            log.warning("phrase cache write failed, not caching this phrase: %s", exc)
            self.discard()

    def commit(self) -> None:
        if self._writer is not None and not self._failed:
            try:
                self._writer.commit()
            except OSError as exc:
                log.warning("phrase cache commit failed: %s", exc)
                self._writer.discard()
        self._writer = None

    def discard(self) -> None:
        self._failed = True
        if self._writer is not None:
            self._writer.discard()
            self._writer = None


async def _aiter(items: Iterable[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item
