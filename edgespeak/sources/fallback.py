"""The offline fallback the settings ask for: espeak-ng in the daemon, or a Piper voice in a
worker process beside it.

``[fallback] voice`` names either engine's voice; the engine follows from the id (a Piper id
is Piper's, :mod:`edgespeak.sources.voices`). With a Piper voice the daemon keeps espeak-ng
too: live fallback (uncached text, someone waiting) uses Piper only when its real-time factor
measured at start is at most ``[fallback] live_max_rtf``, else espeak-ng in the Piper voice's
language, which keeps up on any Pi; pinned phrases use Piper whatever its speed, in the
background (:mod:`edgespeak.sources.warmer`). Piper is never imported into the daemon.

A Piper worker that ran and died (killed for memory on a 512 MB Pi, say) is started again in
the background when the fallback is next needed, at most every :data:`RESTART_EVERY_S`
seconds; espeak-ng speaks meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgespeak.base.errors import TtsError
from edgespeak.config import Settings
from edgespeak.sources.espeak import EngineError, EspeakEngine
from edgespeak.sources.text import strip_markers
from edgespeak.sources.voices import VoiceError, find_piper_voices

if TYPE_CHECKING:  # imported only for a Piper [fallback] voice
    from edgespeak.sources.piper_process import PiperProcess

log = logging.getLogger(__name__)
RESTART_EVERY_S = 30.0  # a Piper worker that died is started again at most this often


@dataclass
class LiveVoice:
    """The voice speaking one fallback announcement: ``voice`` id, ``engine`` name and
    ``rate_hz`` (Hz of the s16le mono PCM :meth:`synthesize` yields)."""

    voice: str
    engine: str
    rate_hz: int
    _espeak: EspeakEngine | None = None
    _piper: PiperProcess | None = None

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        """PCM of ``text`` without its emotion markers. Raises EngineError."""
        text = strip_markers(text)
        if not text:
            return
        if self._piper is not None:
            speech = self._piper.synthesize(text)
        else:
            assert self._espeak is not None
            speech = self._espeak.synthesize(text, self.voice)
        try:
            async for pcm in speech:
                yield pcm
        finally:
            await speech.aclose()


@dataclass
class Fallback:
    """espeak-ng (None when not installed) and, for a Piper ``[fallback] voice``, its worker
    (started by :meth:`start`). ``rendered``: cache keys of pinned phrases stored with the
    Piper voice because the provider could not render them (key → voice id; kept by the
    warmer, read to say in events which voice spoke a cached phrase)."""

    espeak: EspeakEngine | None
    espeak_voice: str
    piper: PiperProcess | None = None
    live_max_rtf: float = 0.5
    rendered: dict[str, str] = field(default_factory=dict)
    revival: asyncio.Task[None] | None = field(default=None, repr=False)  # a restart under way
    _revived_at: float = field(default=-math.inf, repr=False)  # time.monotonic() s

    def live(self) -> LiveVoice:
        """The voice for an announcement the provider cannot speak now: Piper when its worker
        is ready and keeps up (RTF at most ``live_max_rtf``), else espeak-ng. A worker that
        ran and died is started again in the background (:attr:`revival`), at most every
        ``RESTART_EVERY_S``. Raises EngineError when neither can speak."""
        self._revive()
        piper = self.piper
        if piper is not None and piper.ready and (piper.rtf or 0) <= self.live_max_rtf:
            return LiveVoice(piper.voice, "piper", piper.rate_hz, _piper=piper)
        if self.espeak is None:
            raise EngineError("espeak-ng is not installed and Piper is not ready")
        return LiveVoice(self.espeak_voice, "espeak-ng", self.espeak.rate_hz, _espeak=self.espeak)

    @property
    def renderer(self) -> PiperProcess | None:
        """The Piper worker when it is ready: pinned phrases are rendered with it."""
        return self.piper if self.piper is not None and self.piper.ready else None

    async def start(self) -> None:
        """Start the Piper worker, if any, and wait for its voice (a second or two; longer on
        a Pi). A voice that cannot be used is logged as an ERROR saying why, and the fallback
        speaks espeak-ng; never raises."""
        if self.piper is None:
            return
        try:
            await self.piper.start()
        except VoiceError as exc:
            log.error("[fallback] voice: %s; the fallback speaks espeak-ng instead", exc)
            return
        if (self.piper.rtf or 0) > self.live_max_rtf:
            log.info(
                "Piper voice %s is too slow here for live fallback (real-time factor %.2f > "
                "[fallback] live_max_rtf %.2f): live fallback speaks espeak-ng %r, pinned "
                "phrases are rendered with Piper",
                self.piper.voice,
                self.piper.rtf,
                self.live_max_rtf,
                self.espeak_voice,
            )

    def _revive(self) -> None:
        """Start the Piper worker again in the background when it had started and is gone."""
        piper, now = self.piper, time.monotonic()
        if piper is None or piper.ready or piper.rtf is None:  # none, running, never started
            return
        if self.revival is not None and not self.revival.done():
            return
        if now - self._revived_at < RESTART_EVERY_S:  # no restart loop (out of memory?)
            return
        self._revived_at = now
        log.warning("the Piper worker for %s is gone: starting it again", piper.voice)
        self.revival = asyncio.get_running_loop().create_task(self._restart(piper))

    @staticmethod
    async def _restart(piper: PiperProcess) -> None:
        try:
            await piper.start()
        except VoiceError as exc:
            log.error("the Piper worker for %s did not start again: %s", piper.voice, exc)

    async def close(self) -> None:
        """Stop the Piper worker, if any (and a restart under way)."""
        if self.revival is not None:
            self.revival.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.revival
        if self.piper is not None:
            await self.piper.close()


def fallback_engine(s: Settings) -> Fallback | None:
    """The offline fallback for ``[fallback]``, not started (:meth:`Fallback.start`), or None
    (disabled, or no engine at all: logged)."""
    if not s.fallback.enabled:
        return None
    voice = s.fallback.voice
    catalogue = find_piper_voices(s.server.piper_voices_dir)
    if not catalogue.has(voice):  # an espeak-ng voice, as before Piper
        try:
            return Fallback(EspeakEngine(voice=voice), voice, None, s.fallback.live_max_rtf)
        except TtsError as exc:
            log.warning("offline fallback disabled: %s", exc)
            return None
    piper: PiperProcess | None = None
    try:
        info = catalogue.get(voice)
    except VoiceError as exc:
        log.error("[fallback] voice: %s; the fallback speaks espeak-ng instead", exc)
        espeak_voice = "en"
    else:
        from edgespeak.sources.piper_process import PiperProcess

        piper, espeak_voice = PiperProcess(info), info.espeak_voice
    try:
        espeak: EspeakEngine | None = EspeakEngine(voice="en")
    except TtsError as exc:
        if piper is None:
            log.warning("offline fallback disabled: %s", exc)
            return None
        log.warning("espeak-ng is not usable (%s): the fallback has only Piper", exc)
        espeak = None
    if espeak is not None:
        espeak_voice = _espeak_voice(espeak, espeak_voice)
    return Fallback(espeak, espeak_voice, piper, s.fallback.live_max_rtf)


def _espeak_voice(espeak: EspeakEngine, wanted: str) -> str:
    """``wanted`` (a Piper voice's espeak-ng language) if espeak-ng has it, else ``en``."""
    try:
        return espeak.check_voice(wanted)
    except EngineError:
        log.warning("espeak-ng has no voice %r: the fallback speaks espeak-ng 'en'", wanted)
        return "en"
