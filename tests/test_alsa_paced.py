"""AlsaSink on real ALSA paced in real time: a ``file`` PCM over a PulseAudio null sink
captures every byte handed to ALSA (devices and helpers: tests/alsa_sink.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from harness.stack import PulseAudio
from tests.alsa_sink import (
    FADE,
    RATE,
    alsa_config,  # noqa: F401  (module-scoped autouse fixture: the ALSA config)
    chunked,
    dc,
    fill_pipe,
    noise,
    paced,
    play,
    read_to_eof,
    s16,
    sink_on,
    stalls,
)


async def test_abort_fades_out_and_the_next_utterance_follows(
    tmp_path: Path, pulse: PulseAudio
) -> None:
    out = tmp_path / "out.raw"
    async with sink_on(paced(out, pulse)) as sink:
        utt = await sink.begin(RATE)

        async def produce() -> None:  # 2 s of speech, held back by the bounded queue
            for part in chunked(dc(2 * RATE, 16000), 882):
                await sink.write(utt, part)

        producer = asyncio.create_task(produce())
        await utt.first_frame
        asked = time.monotonic()
        cut = await sink.abort(utt)
        latency_s = time.monotonic() - asked
        await producer
        begun = time.monotonic()
        nxt = await sink.begin(RATE)
        await sink.write(nxt, dc(2000, -12000))
        playback = await sink.end(nxt)
        await sink.wait_idle()
    assert cut.interrupted and FADE < cut.frames < RATE  # most of the 2 s never played
    assert latency_s < 0.1, latency_s  # one period to notice + the fade, not the queue
    assert nxt.playback.first_frame_at is not None
    assert nxt.playback.first_frame_at - begun < 0.1
    got = s16(out.read_bytes())
    assert len(got) == cut.frames + playback.frames == cut.frames + 2000
    first = got[: cut.frames]
    ramp = first[-FADE:]
    assert first[-FADE - 1] == 16000 and np.all(np.diff(ramp) <= 0) and ramp[-1] == 0
    second = got[cut.frames :]
    assert second[0] == 0 and second[-1] == 0 and np.all(second[FADE:-FADE] == -12000)


async def test_keep_open_lets_the_next_utterance_start_at_once(
    tmp_path: Path, pulse: PulseAudio
) -> None:
    out = tmp_path / "out.raw"
    keep = round(RATE * 0.4)
    one, two = dc(2205, 1000), dc(2205, 2000)
    async with sink_on(paced(out, pulse), fade_ms=0, keep_open_s=0.4) as sink:
        first = await play(sink, one)  # returns once played: a buffer of silence behind it
        begun = time.monotonic()
        second = await play(sink, two)
        await sink.wait_idle()
    assert second.first_frame_at is not None and second.first_frame_at - begun < 0.05
    got = out.read_bytes()
    gap = len(got) // 2 - first.frames - second.frames - keep
    buffer_frames, period_frames = round(RATE * 0.08), round(RATE * 0.02)
    # About a buffer of silence was written behind the first (the capture holds every frame
    # handed to ALSA); the device played at most a period of it: the rest was taken back.
    assert buffer_frames - period_frames <= gap <= buffer_frames + 2 * period_frames < keep
    assert second.gap_frames is not None and second.gap_frames <= min(gap, period_frames)
    assert got == one + bytes(gap * 2) + two + bytes(keep * 2)


async def test_an_utterance_queued_behind_an_ended_one_follows_without_a_gap(
    tmp_path: Path, pulse: PulseAudio
) -> None:
    out = tmp_path / "out.raw"
    one, two = dc(4410, 1000), dc(2205, 2000)  # 200 ms, then 100 ms
    async with sink_on(paced(out, pulse), fade_ms=0, keep_open_s=0.4) as sink:
        first = await sink.begin(RATE)
        await sink.write(first, one)
        ended = sink.end_nowait(first)  # queued at once, not waited for
        second = await play(sink, two)
        await ended
        await sink.wait_idle()
    assert second.gap_frames == 0
    assert out.read_bytes() == one + two + bytes(round(RATE * 0.4) * 2)


async def test_a_new_rate_queued_behind_an_ended_utterance_reopens_the_device(
    tmp_path: Path, pulse: PulseAudio
) -> None:
    pattern = tmp_path / "out-%r.raw"  # the file PCM names its file after the rate it opened
    one, two = dc(4410, 1000), dc(1600, 2000)  # 200 ms at 22050 Hz, then 100 ms at 16000 Hz
    async with sink_on(paced(pattern, pulse), fade_ms=0, keep_open_s=0.4) as sink:
        first = await sink.begin(RATE)
        await sink.write(first, one)
        ended = sink.end_nowait(first)  # queued at once: the device is still running
        second = await sink.begin(16000)
        await sink.write(second, two)
        playback = await sink.end(second)
        await ended
        await sink.wait_idle()
    assert playback.gap_frames is None  # the device stopped in between: closed, reopened
    assert (tmp_path / "out-22050.raw").read_bytes() == one  # no keep-open silence
    assert (tmp_path / "out-16000.raw").read_bytes() == two + bytes(round(16000 * 0.4) * 2)


async def test_underrun_is_counted_and_playback_completes(
    tmp_path: Path, pulse: PulseAudio
) -> None:
    out = tmp_path / "out.raw"
    pcm = noise(4410)
    async with sink_on(paced(out, pulse), fade_ms=0) as sink:
        utt = await sink.begin(RATE)
        await sink.write(utt, pcm[:1764])
        await utt.first_frame
        await asyncio.sleep(0.3)  # the stimulus: stall longer than the 80 ms buffer
        await sink.write(utt, pcm[1764:])
        playback = await sink.end(utt)
        await sink.wait_idle()
    assert playback.underruns == 1
    assert sink.underruns == playback.underruns
    assert playback.frames == 4410
    # The device restarted on a buffer of silence (80 ms less one 20 ms period), then the rest.
    preroll = round(RATE * 0.08) - round(RATE * 0.02)
    assert out.read_bytes() == pcm[:1764] + bytes(preroll * 2) + pcm[1764:]


async def test_one_stall_is_one_underrun_even_when_the_source_then_keeps_real_time(
    tmp_path: Path, pulse: PulseAudio
) -> None:
    out = tmp_path / "out.raw"
    period = round(RATE * 0.02)
    async with sink_on(paced(out, pulse), fade_ms=0) as sink:
        utt = await sink.begin(RATE)
        await sink.write(utt, noise(period * 4))
        await utt.first_frame
        await asyncio.sleep(0.3)  # the stimulus: a stall longer than the 80 ms buffer
        start = time.monotonic()
        for i in range(25):  # then half a second delivered just in time, period by period
            await asyncio.sleep(max(0.0, start + i * 0.02 - time.monotonic()))
            await sink.write(utt, noise(period, seed=i + 2))
        playback = await sink.end(utt)
        await sink.wait_idle()
    assert playback.underruns == 1, playback.underruns


async def test_a_device_that_blocks_during_the_preroll_is_reported_stalled(
    tmp_path: Path, pulse: PulseAudio
) -> None:
    """The pre-roll after an underrun writes to the PCM like any other write: when the device
    stops taking frames then, ``stalled_s`` (what the daemon's watchdog checks) must grow.

    The device: the paced file PCM writing to a FIFO whose one page is already full and that
    nobody reads yet. The file PCM keeps one buffer of frames and write(2)s only what exceeds
    it, so the speech before the stall (one buffer) passes, and the first pre-roll period after
    the underrun blocks in write(2).
    """
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    keep = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer: alsa-lib's open does not wait
    try:
        before = fill_pipe(keep)
        buffer, period = round(RATE * 0.08), round(RATE * 0.02)
        pcm = noise(4410)
        async with sink_on(paced(fifo, pulse), fade_ms=0) as sink:
            utt = await sink.begin(RATE)
            await sink.write(utt, pcm[: buffer * 2])
            await utt.first_frame
            await asyncio.sleep(0.3)  # the stimulus: a stall longer than the 80 ms buffer
            await sink.write(utt, pcm[buffer * 2 :])  # the underrun, then the pre-roll
            stalled_s = await stalls(sink, at_least_s=0.5, within_s=3)
            where = (sink.underruns, utt.playback.frames)  # after the underrun, no more speech
            reading = asyncio.ensure_future(asyncio.to_thread(read_to_eof, fifo))  # unblocks
            playback = await sink.end(utt)
            await sink.wait_idle()
    finally:
        os.close(keep)  # the last writer gone: the reader meets end of file
    out = await reading
    assert stalled_s >= 0.5, stalled_s
    assert where == (1, buffer)
    assert (playback.underruns, playback.frames) == (1, 4410)
    preroll = bytes((buffer - period) * 2)
    assert out == before + pcm[: buffer * 2] + preroll + pcm[buffer * 2 :]


async def test_a_device_that_stops_consuming_during_keep_open_is_reported_stalled(
    tmp_path: Path, pulse: PulseAudio
) -> None:
    """Keep-open silence is topped up only when there is room (it never blocks in a write, so
    new speech is seen at once); a device that stops consuming then must still show in
    ``stalled_s`` (the daemon's watchdog), as a write blocked on it did. The stimulus: the
    PulseAudio sink suspended (``pactl suspend-sink``), so the PCM's buffer never drains."""
    env = dict(os.environ, PULSE_SERVER=pulse.server)

    def suspend(on: bool) -> None:
        command = ["pactl", "suspend-sink", pulse.SINK, "1" if on else "0"]
        subprocess.run(command, env=env, check=True, capture_output=True)

    async with sink_on(paced(tmp_path / "out.raw", pulse), fade_ms=0, keep_open_s=10) as sink:
        await play(sink, dc(2205, 1000))  # then keep-open silence
        try:
            await asyncio.to_thread(suspend, True)
            stalled_s = await stalls(sink, at_least_s=0.5, within_s=3)
        finally:
            await asyncio.to_thread(suspend, False)
    assert stalled_s >= 0.5, stalled_s
