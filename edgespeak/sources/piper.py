"""Piper engine: one loaded voice, text → bytes of s16le mono PCM, one chunk per sentence.

Piper (PyPI ``piper-tts``, GPL-3.0-or-later, the optional extra ``edgespeak[piper]``) is
imported by this module only, and this module only where a Piper voice is driven (the local
server's voice set, the fallback worker process, the doctor), so an edgespeak that speaks
espeak-ng never loads it.

Piper phonemises the whole text with its own espeak-ng, then runs the model once per sentence
(``.``, ``!``, ``?`` end one; ``,`` ``;`` ``:`` do not), lazily: the first sentence's audio is
ready while the rest is still to be computed. Each sentence is peak-normalised to full scale by
Piper, so a positive gain applied afterwards clips. Its espeak-ng state is process-global
behind a lock, so syntheses in one process take turns: callers use one worker thread
(:func:`piper_executor`) and never run a synthesis on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncGenerator, Generator
from concurrent.futures import Executor, ThreadPoolExecutor

import onnxruntime
from piper import PiperConfig, PiperVoice, SynthesisConfig

from edgespeak.sources.espeak import EngineError
from edgespeak.sources.text import strip_markers
from edgespeak.sources.voices import PiperVoiceInfo, VoiceError, read_config

log = logging.getLogger(__name__)

WARM_UP_TEXT = "Test."  # synthesised at load: proves the model, config and phonemiser agree
# What the real-time factor is measured on: two sentences of an ordinary announcement.
RTF_TEXT = "Someone is at the front door. The washing machine has finished. Please empty it."
_MODEL_INPUTS = {"input", "input_lengths", "scales"}  # what every Piper (VITS) model takes
_LFS_POINTER = b"version https://git-lfs"


def piper_executor() -> ThreadPoolExecutor:
    """The one worker thread Piper syntheses of a process run in (they take turns anyway)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="piper")


class PiperEngine:
    """One Piper voice, loaded and checked. ``info``: its files and description;
    ``threads``: onnxruntime's threads per synthesis (0 = one per core). ``rate_hz``: the
    voice's sample rate in Hz, that of everything it yields.

    Raises VoiceError when it cannot be used: the model missing, a Git LFS pointer, not an
    ONNX model, not a Piper model, the config unusable, or the one-word warm-up failing.
    """

    engine = "piper"

    def __init__(self, info: PiperVoiceInfo, *, threads: int = 0) -> None:
        self.info = info
        self.voice_id = info.id
        model = info.model_path
        try:
            with model.open("rb") as f:
                head = f.read(len(_LFS_POINTER))
        except OSError as exc:
            raise VoiceError(f"Piper voice {info.id!r}: cannot read {model}: {exc}") from None
        if head == _LFS_POINTER:
            raise VoiceError(f"Piper voice {info.id!r}: {model} is a Git LFS pointer, not a model")
        self._config = PiperConfig.from_dict(read_config(info.config_path))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        # onnxruntime's CPU arena keeps every sentence's peak allocation: without it a voice
        # held ~50 MiB less after syntheses (233 → 188 MiB RSS) and was no slower (measured).
        options.enable_cpu_mem_arena = False
        try:
            session = onnxruntime.InferenceSession(
                str(model), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own (pybind) exception classes
            raise VoiceError(f"Piper voice {info.id!r}: cannot load {model}: {exc}") from None
        inputs = {i.name for i in session.get_inputs()}
        if not _MODEL_INPUTS <= inputs:
            raise VoiceError(f"Piper voice {info.id!r}: {model} is not a Piper model")
        self._voice = PiperVoice(session=session, config=self._config)
        self.rate_hz: int = self._config.sample_rate
        try:
            for _ in self.sentences(WARM_UP_TEXT):
                pass
        except EngineError as exc:
            raise VoiceError(f"Piper voice {info.id!r} failed its warm-up: {exc}") from None

    def sentences(self, text: str, *, speed: float = 1.0) -> Generator[bytes, None, None]:
        """Bytes of s16le mono PCM at :attr:`rate_hz` Hz, one item per sentence, each
        computed when it is asked for (blocking: call from a worker thread).

        ``text``: markers like ``(happy)`` are removed first (:func:`strip_markers`); nothing
        is yielded when nothing is left. ``speed``: speaking-rate multiplier, 0.1 to 10 (the
        voice's own ``length_scale`` divided by it). Raises ValueError for a bad speed,
        EngineError when Piper fails.
        """
        if not (math.isfinite(speed) and 0.1 <= speed <= 10.0):
            raise ValueError(f"speed must be 0.1..10, not {speed}")
        text = strip_markers(text)
        if not text:
            return
        syn = SynthesisConfig(length_scale=self._config.length_scale / speed)
        chunks = iter(self._voice.synthesize(text, syn))
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except Exception as exc:  # espeak-ng, onnxruntime, numpy: all end this synthesis
                raise EngineError(f"Piper failed: {type(exc).__name__}: {exc}") from None
            if chunk.sample_rate != self.rate_hz:
                raise EngineError(f"Piper produced {chunk.sample_rate} Hz, not {self.rate_hz}")
            yield chunk.audio_int16_bytes

    async def synthesize(
        self, text: str, executor: Executor, *, speed: float = 1.0
    ) -> AsyncGenerator[bytes, None]:
        """:meth:`sentences` with each sentence computed in ``executor`` (one thread: see
        :func:`piper_executor`), yielded as soon as it is ready. Leaving early stops after the
        sentence under way (the thread cannot be interrupted mid-sentence)."""
        loop = asyncio.get_running_loop()
        chunks = self.sentences(text, speed=speed)
        try:
            while (pcm := await loop.run_in_executor(executor, next, chunks, None)) is not None:
                yield pcm
        finally:
            executor.submit(chunks.close)  # in the same thread, after the sentence under way

    def real_time_factor(self, text: str = RTF_TEXT) -> float:
        """Seconds of computing per second of audio for ``text`` (blocking): below 1 keeps up
        with real time."""
        started = time.perf_counter()
        frames = sum(len(pcm) // 2 for pcm in self.sentences(text))
        elapsed = time.perf_counter() - started
        return elapsed / (frames / self.rate_hz) if frames else math.inf


def load_piper(info: PiperVoiceInfo, *, threads: int = 0) -> PiperEngine:
    """Load ``info`` (blocking, about a second and ~100-200 MB); logs how long it took.
    Raises VoiceError as :class:`PiperEngine` does."""
    started = time.perf_counter()
    engine = PiperEngine(info, threads=threads)
    log.info(
        "loaded Piper voice %s (%s, %d Hz) in %.2f s",
        info.id,
        info.language,
        engine.rate_hz,
        time.perf_counter() - started,
    )
    return engine
