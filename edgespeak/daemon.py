"""``edgespeak run``: the supervisor tying the broker link, the TTS client and the player together.

MQTT messages are parsed on arrival (a bad payload yields a ``failed`` event at once) and valid
announcements go to the :class:`~edgespeak.scheduler.Scheduler` (priorities, preemption, TTL,
duplicates, stop), which speaks them one at a time. SIGTERM/SIGINT stop the daemon:
``offline`` is published, the PCM is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from collections.abc import Callable

from edgespeak.announcement import Announcement, parse_payload
from edgespeak.audio.alsa import AlsaSink
from edgespeak.cache import PhraseCache
from edgespeak.chimes import Chimes
from edgespeak.config import Settings
from edgespeak.engines.espeak import EspeakEngine
from edgespeak.errors import PayloadError, TtsError
from edgespeak.events import Event
from edgespeak.mqtt import MqttLink
from edgespeak.scheduler import Scheduler
from edgespeak.speaker import Speaker
from edgespeak.synthesis import Synthesizer
from edgespeak.tts.fish import FishLiveClient
from edgespeak.warmer import PhraseWarmer

log = logging.getLogger(__name__)


class Daemon:
    """Runs until :meth:`stop` (or SIGTERM/SIGINT when started through :func:`run`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.link = MqttLink(settings, self._on_announce, self._on_stop)
        self._scheduler: Scheduler | None = None
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ask the daemon to shut down gracefully."""
        self._stopping.set()

    async def run(self) -> None:
        """Serve until stopped. The TTS connection is warmed at once, before any announcement;
        configured phrases are pre-warmed into the cache in the background."""
        s = self.settings
        a = s.audio
        sink = AlsaSink(
            a.device,
            period_ms=a.period_ms,
            buffer_ms=a.buffer_ms,
            queue_chunks=a.queue_chunks,
            lead_in_ms=a.lead_in_ms,
            fade_ms=a.fade_ms,
            keep_open_s=a.keep_open_s,
            volume=a.volume,
            mixer=a.mixer,
        )
        cache = PhraseCache(s.cache.dir, max_bytes=s.cache.max_bytes) if s.cache.enabled else None
        tts = make_tts_client(s)
        try:
            async with tts:
                synth = Synthesizer(tts, s.tts.format, s.tts.rate_hz, cache)
                fallback = fallback_engine(s)
                chimes = Chimes(s.sounds.dir)
                speaker = Speaker(
                    s, synth, tts.url, sink, cache, fallback, self.link.post_event, chimes
                )
                self._scheduler = Scheduler(
                    speaker.speak,
                    self.link.post_event,
                    queue_max=s.daemon.queue_max,
                    ttl_s=s.daemon.ttl_s,
                    dedup_window_s=s.daemon.dedup_window_s,
                    on_internal_error=self._internal_error(speaker),
                )
                tasks = {
                    asyncio.create_task(self.link.run(), name="mqtt"),
                    asyncio.create_task(self._scheduler.run(), name="scheduler"),
                }
                if cache is not None and s.cache.phrases:
                    warmer = PhraseWarmer(s, synth, tts.url, cache)
                    tasks.add(asyncio.create_task(warmer.run(tts), name="warmer"))
                stop_task = asyncio.create_task(self._stopping.wait())
                done, _ = await asyncio.wait(
                    tasks | {stop_task}, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done - {stop_task}:
                    task.result()  # a crashed task is a bug: let it surface
                await self.link.close()
                for task in tasks | {stop_task}:
                    task.cancel()
                for task in tasks | {stop_task}:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await synth.close()
        finally:
            await asyncio.to_thread(sink.close)
            if cache is not None:
                cache.close()
            log.info("stopped")

    def _on_announce(self, payload: bytes, topic: str, received_at: float) -> None:
        try:
            ann = parse_payload(payload, received_at=received_at, topic=topic)
        except PayloadError as exc:
            ann_id = exc.announcement_id or uuid.uuid4().hex[:12]
            log.warning("bad payload on %s (id %s): %s", topic, ann_id, exc)
            self.link.post_event(Event(ann_id, "failed", error=str(exc)))
            return
        if self._scheduler is None:  # not running yet: nothing can play it
            self.link.post_event(Event(ann.id, "failed", error="daemon is starting"))
            return
        self._scheduler.submit(ann)

    def _on_stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.stop()

    @staticmethod
    def _internal_error(speaker: Speaker) -> Callable[[Announcement, BaseException], None]:
        def report(ann: Announcement, exc: BaseException) -> None:
            # A bug must cost one announcement, not the daemon.
            log.error("internal error speaking %s", ann.id, exc_info=exc)
            speaker.fail(ann, f"internal error: {type(exc).__name__}: {exc}")

        return report


def make_tts_client(s: Settings) -> FishLiveClient:
    """The provider client for ``s`` (use it as an async context manager)."""
    return FishLiveClient(
        s.tts_url,
        token=s.tts_token,
        model=s.tts.model,
        connect_timeout_s=s.tts.connect_timeout_s,
        first_audio_timeout_s=s.tts.first_audio_timeout_ms / 1000,
        heartbeat_s=s.tts.heartbeat_s,
        reconnect_max_s=s.mqtt.reconnect_max_s,
    )


def fallback_engine(s: Settings) -> EspeakEngine | None:
    """The offline fallback engine, or None (disabled, or espeak-ng missing: logged)."""
    if not s.fallback.enabled:
        return None
    try:
        return EspeakEngine(voice=s.fallback.voice)
    except TtsError as exc:
        log.warning("offline fallback disabled: %s", exc)
        return None


async def run(settings: Settings) -> None:
    """Run a daemon with SIGTERM/SIGINT handlers installed."""
    daemon = Daemon(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stop)
    await daemon.run()
