"""Speak one announcement: cache hit, provider stream, or offline fallback → ALSA, with events.

Order of sources: a verified phrase-cache entry (``source: "cache"``); else the provider
stream, joined with any synthesis of the same phrase already under way (``"stream"``); else,
when the provider cannot deliver first audio within ``[tts] first_audio_timeout_ms`` (refused,
unreachable, server error, timeout), espeak-ng in the daemon (``"fallback"``, never cached).
Events: ``playing`` when the first frame is handed to ALSA (with ``ttfa_ms``), then
``finished`` or ``failed``.

An announcement with a ``url`` (Home Assistant's media player) plays that media instead
(``source: "url"``, its events carrying the URL's ``host`` only): fetched and decoded as it
downloads by :class:`~edgespeak.sources.url.UrlAudio`, within the ``[esphome]`` limits.

Chimes: an announcement with ``chime`` starts its chime (after the lead-in) and its synthesis
at the same moment; the speech utterance is queued behind the chime as soon as its first audio
is in, so it follows the chime's last frame with no gap when synthesis is faster than the
chime. ``ttfa_ms`` then measures to the chime's first frame, and ``chime_gap_ms`` in the
``finished`` event is the silence the device played between chime and speech.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from edgespeak.audio.alsa import AlsaSink
from edgespeak.audio.playback import Playback, Utterance
from edgespeak.base.announcement import Announcement
from edgespeak.base.errors import (
    AudioFormatError,
    EdgespeakError,
    TtsError,
    TtsProtocolError,
    TtsUnavailable,
)
from edgespeak.base.events import Event, Source
from edgespeak.config import Settings
from edgespeak.sources.cache import CachedPhrase, PhraseCache
from edgespeak.sources.fallback import Fallback
from edgespeak.sources.synthesis import Synthesizer
from edgespeak.sources.url import UrlAudio, UrlLimits, url_host
from edgespeak.speaking.chimes import ChimeError, Chimes
from edgespeak.speaking.lookup import CacheLookup

log = logging.getLogger(__name__)
Publish = Callable[[Event], None]
PCM = AsyncGenerator[bytes, None]


@dataclass
class _Audio:
    """Where an announcement's sound comes from: chunks of s16le mono PCM at ``rate()`` Hz."""

    source: Source
    pcm: PCM
    rate: Callable[[], int | None]
    reason: str | None = None  # why the fallback speaks
    voice: str | None = None  # which voice spoke (None: the provider's default)
    engine: str | None = None  # what made the audio: the provider, espeak-ng or piper
    hit: CachedPhrase | None = None  # the cached phrase played: its hit recorded once it plays


class Speaker:
    """Turns announcements into sound on ``sink``, publishing events through ``publish``.

    ``fallback``: the offline fallback (espeak-ng, or a Piper worker), or None when disabled
    or not installed.
    ``chimes``: the chime library (None: a ``chime`` field is reported as unknown).
    """

    def __init__(
        self,
        settings: Settings,
        synth: Synthesizer,
        endpoint: str,
        sink: AlsaSink,
        cache: PhraseCache | None,
        fallback: Fallback | None,
        publish: Publish,
        chimes: Chimes | None = None,
    ) -> None:
        self._settings = settings
        self._synth = synth
        self._endpoint = endpoint
        self._sink = sink
        self._cache = cache
        self._fallback = fallback
        self._publish = publish
        self._chimes = chimes
        self._lookup = CacheLookup(settings, endpoint, cache, sink)

    def prepare(self, ann: Announcement) -> None:
        """``ann`` plays next, as soon as it can (no start instant): prime the sink and start its
        cache lookup now (:meth:`~edgespeak.speaking.lookup.CacheLookup.start`). Never
        raises."""
        self._lookup.start(ann)

    async def speak(self, ann: Announcement, start_at: float | None = None) -> Event:
        """Play ``ann``; returns the final event (``finished`` or ``failed``), already published.

        ``start_at``: a ``time.monotonic()`` instant at which its first sound (the chime when
        there is one, else the speech) must be heard (:meth:`AlsaSink.begin`), or None.
        Never raises for a failure of the provider, the audio device, the format, the cache or
        the chime (an unusable chime is skipped; the ``finished`` event's ``warning`` says why).
        """
        if ann.url is not None:
            return await self._play_url(ann, ann.url, start_at)
        if ann.sound is not None:
            return await self._play_sound(ann, ann.sound, start_at)
        request, key, cached = await self._lookup.result(ann, prime=start_at is None)
        source: Source = "cache" if cached is not None else "stream"
        chime: Utterance | None = None
        warning = None
        try:
            rate_hz = cached.rate_hz if cached is not None else self._settings.tts.rate_hz
            chime, warning = await self._start_chime(ann, rate_hz, start_at)
            if cached is not None:
                audio = _Audio("cache", _aiter(cached.chunks()), lambda: cached.rate_hz)
                audio.hit = cached
                audio.voice, audio.engine = self._renderer(key, request)
            else:
                audio = await self._stream_or_fallback(ann, key, request)
            source = audio.source
            playback = await self._play(ann, audio, chime, start_at)
        except EdgespeakError as exc:
            return self.fail(ann, str(exc), source)
        except BaseException:  # cancelled (interrupted, stopped): the chime stops too
            if chime is not None:
                await self._sink.abort(chime)
            raise
        first = playback if chime is None else chime.playback
        return self._finished(
            ann,
            source,
            playback,
            first.first_frame_at,
            underruns=playback.underruns + (chime.playback.underruns if chime else 0),
            reason=audio.reason,
            chime_gap_ms=_gap_ms(chime.playback, playback) if chime is not None else None,
            warning=warning,
            voice=audio.voice,
            engine=audio.engine,
        )

    async def _play_sound(self, ann: Announcement, pcm: bytes, start_at: float | None) -> Event:
        """Play a ready sound (``source: "sound"``): a Hermes WAV, a chime on its own."""
        audio = _Audio("sound", _aiter([pcm]), lambda: ann.sound_rate_hz)
        try:
            playback = await self._play(ann, audio, None, start_at)
        except EdgespeakError as exc:
            return self.fail(ann, str(exc), "sound")
        return self._finished(
            ann, "sound", playback, playback.first_frame_at, underruns=playback.underruns
        )

    async def _play_url(self, ann: Announcement, url: str, start_at: float | None) -> Event:
        """Play a media URL (``source: "url"``) at the speech rate, so the device stays open."""
        e = self._settings.esphome
        media = UrlAudio(url, self._settings.tts.rate_hz,
                         UrlLimits(e.max_seconds, e.max_bytes, e.fetch_timeout_s))  # fmt: skip
        audio = _Audio("url", media.pcm(), lambda: media.rate_hz)
        try:
            playback = await self._play(ann, audio, None, start_at)
        except EdgespeakError as exc:
            return self.fail(ann, str(exc), "url")
        return self._finished(
            ann, "url", playback, playback.first_frame_at, underruns=playback.underruns
        )

    def _finished(
        self,
        ann: Announcement,
        source: Source,
        playback: Playback,
        first_frame_at: float | None,
        **extra: Any,
    ) -> Event:
        """Log and publish the ``finished`` event (TTFA to ``first_frame_at``); returns it."""
        event = Event(
            ann.id,
            "finished",
            source=source,
            ttfa_ms=_ttfa_ms(ann, first_frame_at) if first_frame_at is not None else None,
            duration_s=round(playback.duration_s, 3),
            host=_host(ann),
            **extra,
        )
        log.info(
            "%s %s from %s: ttfa %.0f ms, %.2f s, %d underruns",
            "played" if source == "sound" else "spoke",
            ann.id,
            source,
            event.ttfa_ms or 0,
            playback.duration_s,
            event.underruns or 0,
        )
        self._publish(event)
        return event

    async def _stream_or_fallback(
        self, ann: Announcement, key: str, request: dict[str, Any]
    ) -> _Audio:
        """The provider's PCM for ``request`` once its first chunk is in; else the fallback
        engine's.

        Raises the provider's error (TtsError, AudioFormatError) when there is no fallback,
        with the fallback's reason added when it failed too.
        """
        flight = self._synth.flight(key, ann.text, request, voice=request.get("reference_id"))
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
                if problem is exc:
                    raise
                raise problem from exc
            try:
                fallback = self._fallback.live()
            except TtsError as err:
                raise TtsUnavailable(f"{reason}; fallback failed too: {err}") from None
            log.warning(
                "speaking %s with the fallback engine: %s (%s voice %s)",
                ann.id, reason, fallback.engine, fallback.voice,
            )  # fmt: skip
            pcm = _explained(fallback.synthesize(ann.text), reason)
            return _Audio("fallback", pcm, lambda: fallback.rate_hz, reason,
                          fallback.voice, fallback.engine)  # fmt: skip
        voice, engine = request.get("reference_id"), self._settings.tts.provider
        return _Audio("stream", prepend(first, pcm), lambda: flight.rate_hz, None, voice, engine)

    def _renderer(self, key: str, request: dict[str, Any]) -> tuple[str | None, str]:
        """(voice, engine) of a cached phrase: the Piper voice that rendered it for the
        fallback, else the provider and the voice asked of it."""
        if self._fallback is not None and key in self._fallback.rendered:
            return self._fallback.rendered[key], "piper"
        return request.get("reference_id"), self._settings.tts.provider

    async def _start_chime(
        self, ann: Announcement, rate_hz: int, start_at: float | None
    ) -> tuple[Utterance | None, str | None]:
        """Queue ``ann``'s chime (lead-in first; heard at ``start_at`` when given) at
        ``rate_hz`` and its end, without waiting for it to play. Returns its utterance, or
        None and a warning when it cannot be played (unknown or broken file: logged, the
        speech goes on without it)."""
        if ann.chime is None:
            return None, None
        try:
            if self._chimes is None:
                raise ChimeError(f"unknown chime {ann.chime!r} (no chimes configured)")
            pcm = await self._chimes.load(ann.chime, rate_hz)
        except ChimeError as exc:
            log.warning("announcement %s plays without its chime: %s", ann.id, exc)
            return None, str(exc)
        utt = await self._sink.begin(
            rate_hz, lead_in_ms=ann.lead_in_ms, gain=_gain(ann), start_at=start_at
        )
        await self._sink.write(utt, pcm)
        self._sink.end_nowait(utt)
        return utt, None

    async def _play(
        self, ann: Announcement, audio: _Audio, after: Utterance | None, start_at: float | None
    ) -> Playback:
        """Write the audio to the sink as it arrives; drain; abort the sound on any failure.

        ``after``: the chime this speech follows (then no lead-in of its own: the chime had it,
        and the chime had ``start_at``); ``start_at``: when the first sound is heard, or None.
        """
        utt: Utterance | None = None
        playing: asyncio.Task[None] | None = None
        try:
            async for chunk in audio.pcm:
                if utt is None:
                    rate_hz = audio.rate()
                    assert rate_hz is not None, "sources know their rate once they yield PCM"
                    utt = await self._sink.begin(
                        rate_hz,
                        lead_in_ms=ann.lead_in_ms if after is None else 0,
                        gain=_gain(ann),
                        start_at=start_at if after is None else None,
                    )
                    first = after or utt
                    playing = asyncio.create_task(self._announce_playing(ann, audio, first))
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

    async def _announce_playing(self, ann: Announcement, audio: _Audio, utt: Utterance) -> None:
        """Once ``utt``'s first frame is handed to ALSA: publish ``playing``, then record the
        cache hit (in a worker thread: after the audio started, not before)."""
        try:
            first = await utt.first_frame
        except EdgespeakError:
            return
        ttfa_ms = _ttfa_ms(ann, first)
        source = audio.source
        self._publish(Event(ann.id, "playing", source=source, ttfa_ms=ttfa_ms, host=_host(ann)))
        if audio.hit is not None:
            await asyncio.to_thread(self._lookup.record_hit, audio.hit)

    def fail(self, ann: Announcement, error: str, source: Source | None = None) -> Event:
        """Log and publish a ``failed`` event for ``ann``; returns it."""
        log.error("announcement %s failed: %s", ann.id, error)
        event = Event(ann.id, "failed", source=source, error=error, host=_host(ann))
        self._publish(event)
        return event


def _host(ann: Announcement) -> str | None:
    """The media URL's host for the events (never its path or query), or None."""
    return url_host(ann.url) if ann.url is not None else None


def _gain(ann: Announcement) -> float:
    return 1.0 if ann.volume is None else ann.volume


def _gap_ms(chime: Playback, speech: Playback) -> float | None:
    """Milliseconds of silence between the chime's last frame and the speech's first: exact
    (frames the device played) when it kept running in between, else estimated from the
    clock (the device stopped: the chime's play time taken as its length)."""
    if speech.gap_frames is not None:
        return round(speech.gap_frames * 1000 / speech.rate_hz, 1)
    if chime.first_frame_at is None or speech.first_frame_at is None:
        return None
    chime_s = (chime.lead_in_frames + chime.frames) / chime.rate_hz
    return round(max(0.0, speech.first_frame_at - chime.first_frame_at - chime_s) * 1000, 1)


def _ttfa_ms(ann: Announcement, first_frame_at: float) -> float:
    """Milliseconds from MQTT receipt to the first frame handed to ALSA."""
    return round((first_frame_at - ann.received_at) * 1000, 1)


async def _aiter(items: Iterable[bytes]) -> PCM:
    for item in items:
        yield item


async def prepend(first: bytes, rest: PCM) -> PCM:
    """``first`` (bytes of PCM), then what ``rest`` yields; ``rest`` is closed either way."""
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
        raise TtsUnavailable(f"{provider_reason}; fallback failed too: {exc}") from exc
    finally:
        await fallback.aclose()
