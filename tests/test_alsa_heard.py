"""When speech is heard: AlsaSink on a ``file`` PCM over a PulseAudio null sink (paced in real
time), the sink's output recorded with time stamps (harness.monitor). Speech must come out within
one ALSA period of its first frame being handed to ALSA, whatever the device was doing: playing
keep-open silence, finishing the previous utterance (a chime), or fading out an interrupted one.

The utterances are tones of distinct loudness, so each one's sound is told apart in the
recording by its level: the earlier one quiet, the measured one loud.

A run with an underrun proves nothing about timing: the machine did not give the writer thread
a core for a whole buffer (80 ms), as happens here at a load of 5 on 2 cores. Such a run is
done again, up to :data:`ATTEMPTS` times; a sink that underruns every time fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from edgespeak.audio.playback import Playback, Utterance
from harness.monitor import Recording, recording
from harness.stack import PulseAudio
from tests.alsa_sink import (
    RATE,
    alsa_config,  # noqa: F401  (module-scoped autouse fixture: the ALSA config)
    chunked,
    paced,
    play,
    sink_on,
)

PERIOD_S = 0.02  # the sink's default ALSA period
PERIOD = round(RATE * PERIOD_S)
CHUNK = 8820  # bytes: 200 ms per write, as a cache hit's chunks (a stream's may be smaller)
QUIET, LOUD = 2000, 20000  # tone amplitudes
HEARD = 10000  # a sample this loud is the loud tone's
SILENT = 100  # below this (both ways) nothing is heard
ATTEMPTS = 3  # runs tried until one is not starved by the machine (no underrun)
T = TypeVar("T")


def tone(seconds: float, amplitude: int) -> bytes:
    t = np.arange(round(RATE * seconds)) / RATE
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()


def silence_before_loud(rec: Recording, start: float) -> tuple[float, float]:
    """When the loud tone came out (``time.monotonic()`` s) and the longest silence between
    ``start`` and then (s)."""
    heard = rec.first_above(HEARD, after=start)
    assert heard is not None, "the loud tone never came out"
    return heard, rec.longest_below(SILENT, after=start, before=heard)


async def unstarved(attempt: Callable[[Path], Awaitable[tuple[T, int]]], tmp_path: Path) -> T:
    """The result of the first of :data:`ATTEMPTS` runs of ``attempt`` (given a fresh
    directory; it returns its result and the underruns it met) that met no underrun."""
    counts = []
    for n in range(ATTEMPTS):
        run_dir = tmp_path / f"run{n}"
        run_dir.mkdir()
        result, underruns = await attempt(run_dir)
        if underruns == 0:
            return result
        counts.append(underruns)
    raise AssertionError(f"an underrun in every run: {counts}")


async def test_speech_during_keep_open_is_heard_within_a_period(
    tmp_path: Path, pulse: PulseAudio
) -> None:
    async def attempt(where: Path) -> tuple[tuple[Recording, Playback, Playback], int]:
        with recording(pulse, where / "monitor.raw") as rec:
            async with sink_on(paced(where / "out.raw", pulse), fade_ms=0, keep_open_s=2) as sink:
                first = await play(sink, tone(0.1, QUIET), CHUNK)  # returns once played
                second = await play(sink, tone(0.2, LOUD), CHUNK)
                underruns = sink.underruns
        return (rec, first, second), underruns

    rec, first, second = await unstarved(attempt, tmp_path)
    assert first.first_frame_at is not None and second.first_frame_at is not None
    heard, _ = silence_before_loud(rec[0], first.first_frame_at)
    late_s = heard - second.first_frame_at
    assert late_s < PERIOD_S, f"heard {late_s * 1000:.1f} ms after its first frame"
    assert second.gap_frames is not None and second.gap_frames <= PERIOD


async def test_speech_primed_during_keep_open_is_heard_within_a_period(
    tmp_path: Path, pulse: PulseAudio
) -> None:
    """A cache hit primes the sink from a worker thread before its audio reaches the writer:
    the keep-open silence is taken back then, and the speech starts the device at once."""

    async def attempt(where: Path) -> tuple[tuple[Recording, Playback, Playback], int]:
        with recording(pulse, where / "monitor.raw") as rec:
            async with sink_on(paced(where / "out.raw", pulse), fade_ms=0, keep_open_s=2) as sink:
                first = await play(sink, tone(0.1, QUIET), CHUNK)  # returns once played
                await asyncio.to_thread(sink.prime)
                second = await play(sink, tone(0.2, LOUD), CHUNK)
                underruns = sink.underruns
        return (rec, first, second), underruns

    rec, first, second = await unstarved(attempt, tmp_path)
    assert first.first_frame_at is not None and second.first_frame_at is not None
    heard, _ = silence_before_loud(rec[0], first.first_frame_at)
    late_s = heard - second.first_frame_at
    assert late_s < PERIOD_S, f"heard {late_s * 1000:.1f} ms after its first frame"
    assert second.gap_frames is None, "the device stopped in between: no exact gap"


async def test_a_prime_that_no_speech_follows_resumes_the_keep_open_silence(
    tmp_path: Path, pulse: PulseAudio
) -> None:
    """Primed, the device stops; with no utterance within a period (the phrase's file failed
    its check, say) the keep-open silence resumes and runs its course, then drains."""
    keep_open_s = 1.0
    async with sink_on(paced(tmp_path / "out.raw", pulse), keep_open_s=keep_open_s) as sink:
        await play(sink, tone(0.1, QUIET), CHUNK)
        primed_at = time.monotonic()
        sink.prime()
        await sink.wait_idle()  # drained once the keep-open silence is over
        idle_after_s = time.monotonic() - primed_at
        later = await play(sink, tone(0.1, LOUD), CHUNK)
    assert idle_after_s > keep_open_s / 2, f"the device stopped for good {idle_after_s:.3f} s in"
    assert later.frames == round(RATE * 0.1) and not later.interrupted


async def test_speech_ready_while_a_chime_ends_follows_it_within_a_period(
    tmp_path: Path, pulse: PulseAudio
) -> None:
    async def attempt(where: Path) -> tuple[tuple[Recording, Utterance, Playback], int]:
        with recording(pulse, where / "monitor.raw") as rec:
            async with sink_on(paced(where / "out.raw", pulse), fade_ms=0, keep_open_s=2) as sink:
                chime = await sink.begin(RATE)
                await sink.write(chime, tone(0.05, QUIET))  # shorter than the 80 ms buffer
                sink.end_nowait(chime)
                await chime.first_frame
                await asyncio.sleep(0.03)  # the stimulus: speech ready while the chime plays
                speech = await play(sink, tone(0.2, LOUD), CHUNK)
                underruns = sink.underruns
        return (rec, chime, speech), underruns

    rec, chime, speech = await unstarved(attempt, tmp_path)
    assert chime.playback.first_frame_at is not None
    _, gap_s = silence_before_loud(rec[0], chime.playback.first_frame_at)
    assert gap_s < PERIOD_S, f"{gap_s * 1000:.1f} ms of silence between chime and speech"
    assert speech.gap_frames is not None and speech.gap_frames <= PERIOD


async def test_an_interrupter_is_heard_within_a_period_of_the_fade_out(
    tmp_path: Path, pulse: PulseAudio
) -> None:
    async def attempt(where: Path) -> tuple[tuple[Recording, float, Playback], int]:
        with recording(pulse, where / "monitor.raw") as rec:
            async with sink_on(paced(where / "out.raw", pulse), keep_open_s=2) as sink:
                normal = await sink.begin(RATE)
                for part in chunked(tone(2, QUIET), CHUNK):  # 2 s queued, mostly never played
                    await sink.write(normal, part)
                await normal.first_frame
                await asyncio.sleep(0.2)  # the stimulus: interrupted in full flow
                cut_at = time.monotonic()
                await sink.abort(normal)
                await asyncio.sleep(0.05)  # the stimulus: the interrupter's audio is ready later
                high = await play(sink, tone(0.2, LOUD), CHUNK)
                underruns = sink.underruns
        return (rec, cut_at, high), underruns

    rec, cut_at, high = await unstarved(attempt, tmp_path)
    _, gap_s = silence_before_loud(rec[0], cut_at)  # its queued rest, its fade-out, the high
    assert gap_s < PERIOD_S, f"{gap_s * 1000:.1f} ms of silence after the fade-out"
    assert high.gap_frames is not None and high.gap_frames <= PERIOD
