"""AlsaSink on real ALSA, byte-exact: a ``file`` PCM over ``null`` (not paced, writes never
block) captures every byte handed to ALSA (devices and helpers: tests/alsa_sink.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from edgespeak.audio.alsa import AlsaSink
from edgespeak.base.errors import AudioDeviceError
from tests.alsa_sink import (
    FADE,
    FS,
    RATE,
    alsa_config,  # noqa: F401  (module-scoped autouse fixture: the ALSA config)
    capture,
    chunked,
    dc,
    fill_pipe,
    noise,
    play,
    read_to_eof,
    s16,
    sink_on,
    stalls,
)


async def test_without_fade_or_gain_output_is_byte_exact(tmp_path: Path) -> None:
    out = tmp_path / "out.raw"
    pcm = noise(5000)
    async with sink_on(capture(out), fade_ms=0) as sink:
        playback = await play(sink, pcm, chunk=1001)  # odd chunks: half frames carried over
        await sink.wait_idle()
    assert out.read_bytes() == pcm
    assert (playback.frames, playback.lead_in_frames, playback.underruns) == (5000, 0, 0)
    assert not playback.interrupted
    assert playback.first_frame_at is not None


async def test_with_fades_and_gain_one_the_middle_is_byte_exact(tmp_path: Path) -> None:
    out = tmp_path / "out.raw"
    pcm = noise(5000)
    async with sink_on(capture(out)) as sink:
        playback = await play(sink, pcm)
        await sink.wait_idle()
    got = out.read_bytes()
    assert len(got) == len(pcm) and playback.frames == 5000
    assert got[FADE * 2 : -FADE * 2] == pcm[FADE * 2 : -FADE * 2]


async def test_fade_in_ramps_up_from_zero(tmp_path: Path) -> None:
    out = tmp_path / "out.raw"
    async with sink_on(capture(out)) as sink:
        await play(sink, dc(2000, FS))
        await sink.wait_idle()
    got = s16(out.read_bytes())
    first_5ms = got[: RATE * 5 // 1000]
    assert got[0] == 0
    assert np.all(np.diff(first_5ms) >= 0)
    assert np.all(got[: RATE // 1000] <= FS // 10)  # no step: the first 1 ms stays below 10 %
    assert np.all(got[FADE : 2000 - FADE] == FS)


async def test_fade_out_ramps_down_to_zero_at_end(tmp_path: Path) -> None:
    out = tmp_path / "out.raw"
    async with sink_on(capture(out)) as sink:
        await play(sink, dc(2000, -FS))
        await sink.wait_idle()
    got = s16(out.read_bytes())
    assert len(got) == 2000
    tail = got[-FADE:]
    assert got[-FADE - 1] == -FS
    assert np.all(np.diff(tail) >= 0)  # negative samples rising towards zero
    assert tail[-1] == 0
    assert np.all(got[-RATE // 1000 :] >= -FS // 10)


async def test_utterance_shorter_than_the_fade_is_faded_both_ways(tmp_path: Path) -> None:
    out = tmp_path / "out.raw"
    async with sink_on(capture(out)) as sink:
        playback = await play(sink, dc(50, FS))
        await sink.wait_idle()
    got = s16(out.read_bytes())
    assert playback.frames == len(got) == 50
    assert got[0] == 0 and got[-1] == 0 and got.max() < FS // 10


async def test_lead_in_is_exactly_that_many_zero_frames(tmp_path: Path) -> None:
    out, other = tmp_path / "out.raw", tmp_path / "other.raw"
    pcm = dc(1000, 1234)
    async with sink_on(capture(out), fade_ms=0, lead_in_ms=25) as sink:
        playback = await play(sink, pcm)
        await sink.wait_idle()
    lead = round(RATE * 25 / 1000)  # 551 frames
    got = out.read_bytes()
    assert got == bytes(lead * 2) + pcm
    assert (playback.lead_in_frames, playback.frames) == (lead, 1000)
    assert playback.duration_s == pytest.approx(1000 / RATE)
    async with sink_on(capture(other), fade_ms=0, lead_in_ms=25) as sink:
        utt = await sink.begin(16000, lead_in_ms=12.5)  # per utterance: 200 frames
        await sink.write(utt, pcm)
        playback = await sink.end(utt)
        await sink.wait_idle()
    assert other.read_bytes() == bytes(200 * 2) + pcm
    assert playback.lead_in_frames == 200


async def test_gain_and_volume_scale_the_samples(tmp_path: Path) -> None:
    pcm = noise(3000)
    for name, options, gain, factor in [
        ("half", {}, 0.5, 0.5),
        ("quarter", {"volume": 0.5}, 0.5, 0.25),
        ("zero", {"volume": 0.0}, 1.0, 0.0),
    ]:
        out = tmp_path / f"{name}.raw"
        async with sink_on(capture(out), fade_ms=0, **options) as sink:
            await play(sink, pcm, gain=gain)
            await sink.wait_idle()
        expected = s16(pcm).astype(np.int32) * factor
        assert np.max(np.abs(s16(out.read_bytes()) - expected)) <= 1, name


async def test_set_volume_applies_from_the_next_chunk(tmp_path: Path) -> None:
    out = tmp_path / "out.raw"
    async with sink_on(capture(out), fade_ms=0) as sink:
        utt = await sink.begin(RATE)
        await sink.write(utt, dc(500, 20000))
        await utt.first_frame  # the first chunk has been scaled and handed to ALSA
        sink.set_volume(0.25)
        await sink.write(utt, dc(500, 20000))
        await sink.end(utt)
        await sink.wait_idle()
    got = s16(out.read_bytes())
    assert np.all(got[:500] == 20000) and np.all(got[500:] == 5000)


async def test_out_of_range_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fade_ms"):
        AlsaSink(capture(tmp_path / "x.raw"), fade_ms=25)
    async with sink_on(capture(tmp_path / "x.raw")) as sink:
        with pytest.raises(ValueError, match="gain"):
            await sink.begin(RATE, gain=1.5)
        with pytest.raises(ValueError, match="lead_in_ms"):
            await sink.begin(RATE, lead_in_ms=-1)
        with pytest.raises(ValueError, match="volume"):
            sink.set_volume(1.01)


async def test_missing_mixer_control_falls_back_to_software_volume(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out.raw"
    with caplog.at_level(logging.WARNING, logger="edgespeak.audio.device"):
        sink = AlsaSink(capture(out), fade_ms=0, volume=0.5, mixer="NoSuchControl")
    assert "NoSuchControl" in caplog.text and "software volume" in caplog.text
    try:
        await play(sink, dc(100, 10000))
        await sink.wait_idle()
    finally:
        await asyncio.to_thread(sink.close)
    assert np.all(s16(out.read_bytes()) == 5000)


async def test_keep_open_writes_exactly_keep_open_s_of_silence(tmp_path: Path) -> None:
    out = tmp_path / "out.raw"
    pcm = dc(1500, 999)
    async with sink_on(capture(out), fade_ms=0, keep_open_s=0.1) as sink:
        playback = await play(sink, pcm)
        await sink.wait_idle()
    assert out.read_bytes() == pcm + bytes(round(RATE * 0.1) * 2)
    assert playback.frames == 1500


async def test_same_rate_reuses_the_pcm_and_a_new_rate_reopens_it(tmp_path: Path) -> None:
    pattern = tmp_path / "out-%r.raw"  # the file PCM names its file after the rate it opened
    first, second, third = dc(700, 111), dc(800, 222), dc(900, 333)
    async with sink_on(capture(pattern), fade_ms=0) as sink:
        await play(sink, first)
        await play(sink, second)
        utt = await sink.begin(16000)
        await sink.write(utt, third)
        playback = await sink.end(utt)
        await sink.wait_idle()
    assert (tmp_path / "out-22050.raw").read_bytes() == first + second
    assert (tmp_path / "out-16000.raw").read_bytes() == third
    assert playback.rate_hz == 16000


async def test_missing_device_raises_and_abort_still_settles() -> None:
    async with sink_on("edgespeak_no_such_pcm") as sink:
        utt = await sink.begin(RATE)
        with contextlib.suppress(AudioDeviceError):  # raised once the writer has failed
            await sink.write(utt, dc(100, 1))
        with pytest.raises(AudioDeviceError, match="edgespeak_no_such_pcm"):
            await sink.end(utt)
        with pytest.raises(AudioDeviceError):
            await utt.first_frame
        other = await sink.begin(RATE)
        playback = await sink.abort(other)
        assert playback.frames == 0


async def test_abort_without_fade_drops_and_the_next_utterance_plays(tmp_path: Path) -> None:
    out = tmp_path / "out.raw"
    after = dc(1000, -500)
    async with sink_on(capture(out), fade_ms=0) as sink:
        utt = await sink.begin(RATE)
        for part in chunked(dc(4000, 700), 882):
            await sink.write(utt, part)
        cut = await sink.abort(utt, fade=False)
        playback = await play(sink, after)
        await sink.wait_idle()
    assert cut.interrupted and cut.frames <= 4000
    assert not playback.interrupted and playback.frames == 1000
    assert out.read_bytes().endswith(after)


async def test_unfinished_utterances_are_still_settled(tmp_path: Path) -> None:
    async with sink_on(capture(tmp_path / "out.raw")) as sink:
        forgotten = await sink.begin(RATE)
        await sink.write(forgotten, dc(1000, 300))
        await play(sink, dc(1000, 400))  # begun without ending the first: that one is cut
        assert (await forgotten.done).interrupted
        left_open = await sink.begin(RATE)
        await sink.write(left_open, dc(1000, 500))
    with pytest.raises(AudioDeviceError, match="closed"):
        await left_open.done
    with pytest.raises(AudioDeviceError, match="closed"):
        await sink.begin(RATE)


async def test_a_device_that_blocks_while_the_pcm_is_closed_is_reported_stalled(
    tmp_path: Path,
) -> None:
    """Closing the PCM (on a new rate, after an error, at the end) drains it first, which blocks
    like a write: ``stalled_s`` (what the daemon's watchdog checks) must see that too."""
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    keep = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer: alsa-lib's open does not wait
    try:
        before = fill_pipe(keep)
        pcm = noise(1000)  # less than one buffer: kept by the file PCM until it is closed
        sink = AlsaSink(capture(fifo), fade_ms=0)
        utt = await sink.begin(RATE)
        await sink.write(utt, pcm)
        await utt.first_frame
        closing = asyncio.ensure_future(asyncio.to_thread(sink.close))  # under way: no drain
        stalled_s = await stalls(sink, at_least_s=0.5, within_s=3)  # close() waits 5 s
        reading = asyncio.ensure_future(asyncio.to_thread(read_to_eof, fifo))  # unblocks
        await closing
    finally:
        os.close(keep)  # the last writer gone: the reader meets end of file
    assert stalled_s >= 0.5, stalled_s
    assert await reading == before + pcm
    with pytest.raises(AudioDeviceError, match="closed"):
        await utt.done
