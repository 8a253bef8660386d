"""Speak one announcement: cache hit, provider stream, or offline fallback → ALSA, with events.

Order of sources: a verified phrase-cache entry (``source: "cache"``); else the provider
stream, joined with any synthesis of the same phrase already under way (``"stream"``); else,
when the provider cannot deliver first audio within ``[tts] first_audio_timeout_ms`` (refused,
unreachable, server error, timeout), espeak-ng in the daemon (``"fallback"``, never cached).
Events: ``playing`` when the first frame is handed to ALSA (with ``ttfa_ms``), then
``finished`` or ``failed``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass

from edgespeak.announcement import Announcement
from edgespeak.audio.alsa import AlsaSink, Playback, Utterance
from edgespeak.cache import PhraseCache, cache_key
from edgespeak.config import Settings
from edgespeak.engines.espeak import EspeakEngine
from edgespeak.errors import (
    AudioFormatError,
    EdgespeakError,
    TtsError,
    TtsProtocolError,
    TtsUnavailable,
)
from edgespeak.events import Event, Source
from edgespeak.synthesis import Synthesizer
from edgespeak.tts import fish_protocol as fp

log = logging.getLogger(__name__)
Publish = Callable[[Event], None]
PCM = AsyncGenerator[bytes, None]
PROVIDER = "fish"


@dataclass
class _Audio:
    """Where an announcement's sound comes from: chunks of s16le mono PCM at ``rate()`` Hz."""

    source: Source
    pcm: PCM
    rate: Callable[[], int | None]
    reason: str | None = None  # why the fallback speaks


def phrase_key(settings: Settings, endpoint: str, text: str, voice: str | None) -> str:
    """The cache key of ``text`` spoken by the configured provider in ``voice``."""
    tts = settings.tts
    return cache_key(
        provider=PROVIDER,
        endpoint=endpoint,
        model=tts.model,
        voice=voice or tts.reference_id,
        format=tts.format,
        sample_rate=tts.rate_hz,
        prosody=None,
        text=text,
    )


def provider_request(settings: Settings, voice: str | None) -> dict[str, object]:
    """The Fish TTSRequest for one announcement (shared/protocols.md §1)."""
    tts = settings.tts
    return fp.build_request(
        format=tts.format, sample_rate=tts.sample_rate, reference_id=voice or tts.reference_id
    )


class Speaker:
    """Turns announcements into sound on ``sink``, publishing events through ``publish``.

    ``fallback``: the in-daemon espeak-ng engine, or None when disabled or not installed.
    """

    def __init__(
        self,
        settings: Settings,
        synth: Synthesizer,
        endpoint: str,
        sink: AlsaSink,
        cache: PhraseCache | None,
        fallback: EspeakEngine | None,
        publish: Publish,
    ) -> None:
        self._settings = settings
        self._synth = synth
        self._endpoint = endpoint
        self._sink = sink
        self._cache = cache
        self._fallback = fallback
        self._publish = publish

    async def speak(self, ann: Announcement) -> Event:
        """Play ``ann``; returns the final event (``finished`` or ``failed``), already published.

        Never raises for a failure of the provider, the audio device, the format or the cache.
        """
        key = phrase_key(self._settings, self._endpoint, ann.text, ann.voice)
        # In a thread: the index may wait for a CLI process's write (sqlite busy timeout).
        cached = await asyncio.to_thread(self._cache.get, key) if self._cache else None
        source: Source = "cache" if cached is not None else "stream"
        try:
            if cached is not None:
                audio = _Audio("cache", _aiter(cached.chunks()), lambda: cached.rate_hz)
            else:
                audio = await self._stream_or_fallback(ann, key)
            source = audio.source
            playback = await self._play(ann, audio)
        except EdgespeakError as exc:
            return self.fail(ann, str(exc), source)
        first = playback.first_frame_at
        event = Event(
            ann.id,
            "finished",
            source=source,
            ttfa_ms=_ttfa_ms(ann, first) if first is not None else None,
            duration_s=round(playback.duration_s, 3),
            underruns=playback.underruns,
            reason=audio.reason,
        )
        log.info(
            "spoke %s from %s: ttfa %.0f ms, %.2f s, %d underruns",
            ann.id,
            source,
            event.ttfa_ms or 0,
            playback.duration_s,
            playback.underruns,
        )
        self._publish(event)
        return event

    async def _stream_or_fallback(self, ann: Announcement, key: str) -> _Audio:
        """The provider's PCM once its first chunk is in; else the fallback engine's.

        Raises the provider's error (TtsError, AudioFormatError) when there is no fallback,
        with the fallback's reason added when it failed too.
        """
        voice = ann.voice or self._settings.tts.reference_id
        flight = self._synth.flight(
            key, ann.text, provider_request(self._settings, ann.voice), voice=voice
        )
        pcm = flight.follow()
        timeout_s = self._settings.tts.first_audio_timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout_s):
                first = await anext(pcm)
        except (TtsError, AudioFormatError, TimeoutError) as exc:
            await pcm.aclose()
            problem = exc
            if isinstance(exc, TimeoutError):
                problem = TtsUnavailable(f"no audio from the provider within {timeout_s:g} s")
            reason = str(problem)
            if self._fallback is None:
                raise problem from None
            log.warning("speaking %s with the fallback engine: %s", ann.id, reason)
            fallback = self._fallback
            pcm = _explained(fallback.synthesize(ann.text), reason)
            return _Audio("fallback", pcm, lambda: fallback.rate_hz, reason)
        return _Audio("stream", _prepend(first, pcm), lambda: flight.rate_hz)

    async def _play(self, ann: Announcement, audio: _Audio) -> Playback:
        """Write the audio to the sink as it arrives; drain; abort the sound on any failure."""
        utt: Utterance | None = None
        playing: asyncio.Task[None] | None = None
        try:
            async for chunk in audio.pcm:
                if utt is None:
                    rate_hz = audio.rate()
                    assert rate_hz is not None, "sources know their rate once they yield PCM"
                    utt = await self._sink.begin(
                        rate_hz,
                        lead_in_ms=ann.lead_in_ms,
                        gain=1.0 if ann.volume is None else ann.volume,
                    )
                    playing = asyncio.create_task(self._announce_playing(ann, audio.source, utt))
                await self._sink.write(utt, chunk)
            if utt is None:
                raise TtsProtocolError(f"the {audio.source} source finished without audio")
            return await self._sink.end(utt)
        except BaseException:
            if utt is not None:
                await self._sink.abort(utt)
            raise
        finally:
            await audio.pcm.aclose()
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


async def _aiter(items: Iterable[bytes]) -> PCM:
    for item in items:
        yield item


async def _prepend(first: bytes, rest: PCM) -> PCM:
    yield first
    try:
        async for item in rest:
            yield item
    finally:
        await rest.aclose()


async def _explained(fallback: PCM, provider_reason: str) -> PCM:
    """The fallback's PCM; if it fails too, its error says why both failed."""
    try:
        async for item in fallback:
            yield item
    except TtsError as exc:
        raise TtsUnavailable(f"{provider_reason}; fallback failed too: {exc}") from None
    finally:
        await fallback.aclose()
