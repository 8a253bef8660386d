"""Utterances heard at a given instant (``AlsaSink.begin(start_at=...)``): AlsaSink on a ``file``
PCM over a PulseAudio null sink (paced in real time), the sink's output recorded with time
stamps (harness.monitor). The first sound must come out within ``HEARD_S`` of the instant
whatever the device was doing: closed, drained, running on keep-open silence (more or less of
it queued than the time left), finishing a chime; an instant already past joins in step. The
sink's own estimate (``Playback.start_offset_s``) must be within ``OFFSET_S``.

The recording's own latency and the null sink's render-ahead are not subtracted (see
harness.monitor): measured here, the first sound comes out -1.3..+1.4 ms from the instant while
the sink's estimate within 0.1 ms (once 1.3 ms, at a load average of 4); the bounds leave room
for that.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgespeak.audio.alsa import AlsaSink
from edgespeak.audio.playback import Playback
from harness.monitor import Recording, recording
from harness.stack import PulseAudio
from tests.alsa_sink import (
    RATE,
    alsa_config,  # noqa: F401  (module-scoped autouse fixture: the ALSA config)
    paced,
    play,
    sink_on,
)

HEARD_S = 0.0025  # "within a couple of ms", the recording's own ±1 ms included
OFFSET_S = 0.002
# A 200 ms ALSA buffer (the default is 80 ms) so that a loaded test machine does not underrun
# the writer thread: where an utterance starts does not depend on it (tests/test_alsa_start_at.py
# uses the default). The PulseAudio plugin queues up to two buffers (ALSA's, then the server's
# stream buffer), so keep-open silence queued is up to 400 ms here.
BUFFER_MS = 200
CHUNK = 8820  # bytes: 200 ms per write, as a cache hit's chunks
QUIET, LOUD = 4000, 20000  # tone amplitudes
HEARD_QUIET, HEARD_LOUD = 2000, 10000  # a sample this loud is the quiet / loud tone's


def paced_sink(
    tmp_path: Path, pulse: PulseAudio, **options: Any
) -> AbstractAsyncContextManager[AlsaSink]:
    """An AlsaSink on the paced device, no fade (a tone's first sample is its own)."""
    return sink_on(paced(tmp_path / "out.raw", pulse), fade_ms=0, buffer_ms=BUFFER_MS, **options)


def tone(seconds: float, amplitude: int) -> bytes:
    """A 440 Hz sine starting at 0 (reaches half its amplitude 0.19 ms in)."""
    t = np.arange(round(RATE * seconds)) / RATE
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()


def heard_at(rec: Recording, level: int, after: float) -> float:
    """When a sample at least ``level`` loud first came out after ``after`` (monotonic s)."""
    heard = rec.first_above(level, after=after)
    assert heard is not None, "the tone never came out"
    return heard


def assert_on_time(heard: float, start_at: float, playback: Playback) -> None:
    late_ms = (heard - start_at) * 1000
    assert abs(late_ms) <= HEARD_S * 1000, f"heard {late_ms:+.2f} ms from the instant"
    assert playback.start_offset_s is not None
    assert abs(playback.start_offset_s) <= OFFSET_S, playback.start_offset_s


@pytest.mark.parametrize("state", ["closed", "drained"])
async def test_from_a_stopped_device_the_first_frame_is_heard_at_the_instant(
    tmp_path: Path, pulse: PulseAudio, state: str
) -> None:
    """Closed (never opened) or drained after an utterance: started on part of the silence,
    the rest measured again; a lead-in (50 ms) is counted in the silence, not added."""
    with recording(pulse, tmp_path / "monitor.raw") as rec:
        async with paced_sink(tmp_path, pulse, lead_in_ms=50) as sink:
            if state == "drained":
                await play(sink, tone(0.05, QUIET), CHUNK)
                await sink.wait_idle()
            start_at = time.monotonic() + 0.3
            playback = await play(sink, tone(0.2, LOUD), CHUNK, start_at=start_at)
            underruns = sink.underruns
    assert underruns == 0
    assert_on_time(heard_at(rec[0], HEARD_LOUD, start_at - 0.3), start_at, playback)
    assert playback.gap_frames is None and playback.skipped_frames == 0
    assert 0 < playback.lead_in_frames <= RATE * 0.3  # the time left, the lead-in in it


async def test_from_keep_open_silence_the_first_frame_is_heard_at_the_instant(
    tmp_path: Path, pulse: PulseAudio
) -> None:
    """More time left than silence queued: the queued silence is counted, none taken back."""
    with recording(pulse, tmp_path / "monitor.raw") as rec:
        async with paced_sink(tmp_path, pulse, keep_open_s=2) as sink:
            first = await play(sink, tone(0.1, QUIET), CHUNK)  # returns once played
            await asyncio.sleep(0.1)  # the stimulus: the device idles on silence a while
            start_at = time.monotonic() + 0.6
            second = await play(sink, tone(0.2, LOUD), CHUNK, start_at=start_at)
            underruns = sink.underruns
    assert underruns == 0
    assert first.first_frame_at is not None
    assert_on_time(heard_at(rec[0], HEARD_LOUD, first.first_frame_at), start_at, second)
    assert second.gap_frames is not None and second.gap_frames > 0  # kept: none taken back


async def test_an_instant_closer_than_the_silence_queued_takes_it_back(
    tmp_path: Path, pulse: PulseAudio
) -> None:
    """Less time left than the keep-open silence queued (up to 400 ms): it is dropped and
    the device restarts on exactly the silence still due."""
    with recording(pulse, tmp_path / "monitor.raw") as rec:
        async with paced_sink(tmp_path, pulse, keep_open_s=2) as sink:
            first = await play(sink, tone(0.1, QUIET), CHUNK)
            await asyncio.sleep(0.1)  # the stimulus: the device idles on silence a while
            start_at = time.monotonic() + 0.03
            second = await play(sink, tone(0.2, LOUD), CHUNK, start_at=start_at)
            underruns = sink.underruns
    assert underruns == 0
    assert first.first_frame_at is not None
    assert_on_time(heard_at(rec[0], HEARD_LOUD, first.first_frame_at), start_at, second)
    assert second.skipped_frames == 0 and second.gap_frames is not None


async def test_a_chime_is_heard_at_the_instant_and_the_speech_follows_it(
    tmp_path: Path, pulse: PulseAudio
) -> None:
    """A chime begun with the instant (with a lead-in: counted in the silence, not added),
    the speech queued behind it without one: the chime starts on time, the speech follows its
    last frame with no gap."""
    with recording(pulse, tmp_path / "monitor.raw") as rec:
        async with paced_sink(tmp_path, pulse, keep_open_s=2) as sink:
            await play(sink, tone(0.05, QUIET), CHUNK)  # the device runs on keep-open silence
            start_at = time.monotonic() + 0.6
            chime = await sink.begin(RATE, lead_in_ms=100, start_at=start_at)
            await sink.write(chime, tone(0.1, LOUD))
            sink.end_nowait(chime)
            speech = await play(sink, tone(0.2, LOUD), CHUNK)
            underruns = sink.underruns
    assert underruns == 0
    heard = heard_at(rec[0], HEARD_LOUD, start_at - 0.6)
    assert_on_time(heard, start_at, chime.playback)
    assert speech.gap_frames == 0
    gap_s = rec[0].longest_below(HEARD_QUIET, after=heard, before=heard + 0.3 - 0.001)
    assert gap_s < 0.002, f"{gap_s * 1000:.1f} ms of silence between chime and speech"


async def test_an_instant_already_past_skips_what_is_past_and_joins_in_step(
    tmp_path: Path, pulse: PulseAudio
) -> None:
    """Frame ``k`` is heard at ``start_at + k / rate``: the frames already past are dropped."""
    with recording(pulse, tmp_path / "monitor.raw") as rec:
        async with paced_sink(tmp_path, pulse, keep_open_s=2) as sink:
            await play(sink, tone(0.05, QUIET), CHUNK)  # the device runs on keep-open silence
            start_at = time.monotonic() - 0.1
            playback = await play(sink, tone(0.5, LOUD), CHUNK, start_at=start_at)
            underruns = sink.underruns
    assert underruns == 0
    skipped = playback.skipped_frames
    assert RATE * 0.1 <= skipped < RATE * 0.15, skipped
    joined = start_at + skipped / RATE  # when its first frame played should be heard
    samples = np.frombuffer(tone(0.5, LOUD), "<i2")[skipped:]
    # its first loud sample (the tone joined mid-wave), where in step
    first_loud = int(np.flatnonzero(np.abs(samples.astype(np.int32)) >= HEARD_LOUD)[0])
    heard = heard_at(rec[0], HEARD_LOUD, start_at)
    late_ms = (heard - joined - first_loud / RATE) * 1000
    assert abs(late_ms) <= HEARD_S * 1000, f"heard {late_ms:+.2f} ms out of step"
    assert playback.start_offset_s is not None
    assert abs(playback.start_offset_s) <= OFFSET_S, playback.start_offset_s
    assert playback.frames == len(samples)
