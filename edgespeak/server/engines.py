"""The local server's voices: espeak-ng's and Piper's in one namespace, one default.

A request names a voice by id (Fish ``reference_id``, Cartesia ``voice.id``); a Piper id
(``en_US-joe-medium``, see :mod:`edgespeak.sources.voices`) speaks with Piper, anything else
must be an espeak-ng voice. With no ``[server] voice`` the default is the best installed Piper
voice, else espeak-ng's ``en``. The default voice is loaded when the server starts, so a
missing or corrupt voice file stops the start with a clear error; another Piper voice is loaded
the first time a request asks for it (in the Piper worker thread, never on the event loop) and
then kept. Piper is imported only when a Piper voice is loaded.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgespeak.sources.espeak import EngineError, EspeakEngine
from edgespeak.sources.text import strip_markers
from edgespeak.sources.voices import (
    Engine,
    PiperCatalogue,
    PiperVoiceInfo,
    VoiceError,
    find_piper_voices,
)

if TYPE_CHECKING:
    from edgespeak.sources.piper import PiperEngine

log = logging.getLogger(__name__)

ESPEAK_DEFAULT = "en"
PIPER_MISSING = "Piper is not installed here (pip install 'edgespeak[piper]', 64-bit OS only)"


@dataclass(frozen=True)
class VoiceChoice:
    """A checked voice: its ``id`` as the engine takes it and the ``engine`` speaking it."""

    id: str
    engine: Engine


class LocalEngines:
    """espeak-ng (None when not installed) and the Piper voices of ``catalogue``; ``default``:
    the checked default voice. Build with :meth:`start`."""

    def __init__(
        self, espeak: EspeakEngine | None, catalogue: PiperCatalogue, default: VoiceChoice
    ) -> None:
        self.espeak = espeak
        self.catalogue = catalogue
        self.default = default
        self.loaded: dict[str, PiperEngine] = {}
        self._failed: dict[str, VoiceError] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._loading: dict[str, asyncio.Future[PiperEngine]] = {}

    @classmethod
    def start(cls, voice: str | None = None, voices_dir: Path | None = None) -> LocalEngines:
        """Find the voices, choose and load the default (blocking: a Piper voice takes about a
        second). ``voice``: ``[server] voice`` (None: the best Piper voice, else ``en``);
        ``voices_dir``: ``[server] piper_voices_dir``.

        Raises EngineError (VoiceError for a Piper voice) saying why the default cannot
        speak: unknown, its files missing or broken, Piper or espeak-ng not installed."""
        catalogue = find_piper_voices(voices_dir)
        try:
            espeak: EspeakEngine | None = EspeakEngine(voice=ESPEAK_DEFAULT)
        except EngineError as exc:
            espeak, missing = None, exc
        if voice is None:
            best = catalogue.best()
            voice = best.id if best is not None and piper_importable() else ESPEAK_DEFAULT
        engines = cls(espeak, catalogue, VoiceChoice(voice, "espeak-ng"))
        if catalogue.has(voice):
            engines.default = VoiceChoice(voice, "piper")
            engines.loaded[voice] = _load(catalogue.get(voice))
        elif espeak is None:
            raise missing
        else:
            engines.default = engines.choose(voice)
        log.info("default voice %s (%s)", engines.default.id, engines.default.engine)
        return engines

    def choose(self, voice: str | None) -> VoiceChoice:
        """The voice a request asks for (None: the default). Raises EngineError for an unknown
        voice (VoiceError for a broken Piper voice)."""
        if voice is None:
            return self.default
        if self.catalogue.has(voice):
            self.catalogue.get(voice)  # raises VoiceError for a broken one
            if voice in self._failed:
                raise self._failed[voice]
            if not piper_importable():
                raise VoiceError(f"Piper voice {voice!r}: {PIPER_MISSING}")
            return VoiceChoice(voice, "piper")
        try:
            if self.espeak is None:
                raise EngineError("espeak-ng is not installed")
            return VoiceChoice(self.espeak.check_voice(voice), "espeak-ng")
        except EngineError:
            raise EngineError(
                f"unknown voice {voice!r}: neither a Piper voice nor an espeak-ng voice here "
                "(`edgespeak voices list` or GET /model lists them)"
            ) from None

    def check_voice(self, voice: str) -> str:
        """``voice`` when this server can speak it; else raises EngineError."""
        return self.choose(voice).id

    def rate_hz(self, choice: VoiceChoice) -> int:
        """The sample rate in Hz of ``choice``'s PCM (known without loading the voice)."""
        if choice.engine == "piper":
            return self.catalogue.get(choice.id).sample_rate
        assert self.espeak is not None
        return self.espeak.rate_hz

    def piper_voices(self) -> list[PiperVoiceInfo]:
        """The usable Piper voices, by id."""
        return sorted(self.catalogue.voices.values(), key=lambda v: v.id)

    async def synthesize(
        self, text: str, choice: VoiceChoice, *, speed: float = 1.0
    ) -> AsyncGenerator[bytes, None]:
        """Bytes of s16le mono PCM at :meth:`rate_hz` for ``text`` without its emotion markers,
        as the engine produces them (Piper: sentence by sentence, computed in the worker
        thread). Raises EngineError (VoiceError when a Piper voice cannot be loaded)."""
        text = strip_markers(text)
        if not text:
            return
        if choice.engine == "espeak-ng":
            assert self.espeak is not None
            speech = self.espeak.synthesize(text, choice.id, speed=speed)
        else:
            engine = await self._piper(choice.id)
            speech = engine.synthesize(text, self._worker(), speed=speed)
        try:
            async for pcm in speech:
                yield pcm
        finally:
            await speech.aclose()

    def _worker(self) -> ThreadPoolExecutor:
        if self._executor is None:
            from edgespeak.sources.piper import piper_executor

            self._executor = piper_executor()
        return self._executor

    async def _piper(self, voice_id: str) -> PiperEngine:
        """The loaded engine of ``voice_id``, loading it (once, in the worker thread) when
        needed. Raises VoiceError, also for every later request, when it cannot be loaded."""
        if voice_id in self.loaded:
            return self.loaded[voice_id]
        if voice_id in self._failed:
            raise self._failed[voice_id]
        loading = self._loading.get(voice_id)
        if loading is None:
            info = self.catalogue.get(voice_id)
            loop = asyncio.get_running_loop()
            loading = asyncio.ensure_future(loop.run_in_executor(self._worker(), _load, info))
            self._loading[voice_id] = loading
        try:
            engine = await asyncio.shield(loading)
        except VoiceError as exc:
            self._failed[voice_id] = exc
            raise
        finally:
            if loading.done():
                self._loading.pop(voice_id, None)
        self.loaded[voice_id] = engine
        return engine

    def close(self) -> None:
        """Stop the worker thread (after the synthesis under way)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


@functools.cache
def piper_importable() -> bool:
    """Whether Piper and onnxruntime import here (they are then loaded: a Piper voice is about
    to be). False, with a warning (once), when the extra is not installed."""
    try:
        import edgespeak.sources.piper  # noqa: F401
    except ImportError as exc:
        log.warning("Piper voices are installed but Piper is not: %s (%s)", PIPER_MISSING, exc)
        return False
    return True


def _load(info: PiperVoiceInfo) -> PiperEngine:
    """Load a Piper voice (blocking). Raises VoiceError, also when Piper is not installed."""
    try:
        from edgespeak.sources.piper import load_piper
    except ImportError as exc:
        raise VoiceError(f"Piper voice {info.id!r}: {PIPER_MISSING} ({exc})") from None
    return load_piper(info)
