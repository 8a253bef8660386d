"""AlsaSink on real ALSA through pyalsaaudio: byte-exact capture, and real-time pacing.

Two PCMs take the capture file (and the PulseAudio server) as ALSA arguments, so one config
serves every test: ``edgespeak_capture:FILE=…`` is a ``file`` PCM over ``null`` (byte-exact,
not paced: writes never block) and ``edgespeak_paced_capture:FILE=…,SERVER=…`` a ``file`` PCM
over a PulseAudio null sink (byte-exact and paced in real time). alsa-lib reloads its config
when ``ALSA_CONFIG_PATH`` changes, so setting it for this module is enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgespeak.audio.alsa import AlsaSink, Playback
from edgespeak.base.errors import AudioDeviceError
from harness.stack import PulseAudio

RATE = 22050
FS = 32767  # full scale
FADE = round(RATE * 8 / 1000)  # frames in the default 8 ms fade
ALSA_CONF = """
pcm.edgespeak_capture {
  @args [ FILE ]
  @args.FILE { type string }
  type file
  slave.pcm "null"
  file $FILE
  format "raw"
}
pcm.edgespeak_paced_capture {
  @args [ FILE SERVER ]
  @args.FILE { type string }
  @args.SERVER { type string }
  type file
  slave.pcm { type pulse server $SERVER }
  file $FILE
  format "raw"
}
"""


@pytest.fixture(scope="module", autouse=True)
def alsa_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    conf = tmp_path_factory.mktemp("alsa") / "asound.conf"
    conf.write_text(ALSA_CONF)
    saved = os.environ.get("ALSA_CONFIG_PATH")
    os.environ["ALSA_CONFIG_PATH"] = f"/usr/share/alsa/alsa.conf:{conf}"
    yield
    if saved is None:
        del os.environ["ALSA_CONFIG_PATH"]
    else:
        os.environ["ALSA_CONFIG_PATH"] = saved


def capture(path: Path) -> str:
    return f'edgespeak_capture:FILE="{path}"'


def paced(path: Path, pulse: PulseAudio) -> str:
    return f'edgespeak_paced_capture:FILE="{path}",SERVER="{pulse.server}"'


def dc(frames: int, value: int) -> bytes:
    return np.full(frames, value, dtype="<i2").tobytes()


def noise(frames: int, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    return rng.integers(-32768, 32768, frames, dtype=np.int16).astype("<i2").tobytes()


def s16(data: bytes) -> np.ndarray[Any, np.dtype[np.int16]]:
    return np.frombuffer(data, dtype="<i2")


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@contextlib.asynccontextmanager
async def sink_on(device: str, **options: Any) -> AsyncIterator[AlsaSink]:
    sink = AlsaSink(device, **options)
    try:
        yield sink
    finally:
        await asyncio.to_thread(sink.close)


async def play(sink: AlsaSink, pcm: bytes, chunk: int = 882, **begin: Any) -> Playback:
    """One utterance: begin at RATE, write ``pcm`` in chunks of ``chunk`` bytes, end."""
    utt = await sink.begin(RATE, **begin)
    for part in chunked(pcm, chunk):
        await sink.write(utt, part)
    return await sink.end(utt)


# ---- byte-exact capture (file over null, not paced) ----------------------------------------
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
    with caplog.at_level(logging.WARNING, logger="edgespeak.audio.alsa"):
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


# ---- paced in real time (file over a PulseAudio null sink) --------------------------------
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
    assert buffer_frames <= gap <= buffer_frames + 2 * period_frames < keep
    assert second.gap_frames == gap  # what the writer reports is what the device played
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
