"""Utterances with a start instant (``AlsaSink.begin(start_at=...)``), byte-exact: what the
writer hands to ALSA, captured by a ``file`` PCM (over ``null``: not paced, its delay is always
0; over a PulseAudio null sink: paced, a real delay). How the instant is heard in real time:
tests/test_alsa_start_at_heard.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import alsaaudio
import numpy as np
import pytest

from edgespeak.audio.device import PcmDevice
from edgespeak.audio.libasound import pcm_drop, pcm_handle, pcm_prepare
from harness.stack import PulseAudio
from tests.alsa_sink import (
    FADE,
    RATE,
    alsa_config,  # noqa: F401  (module-scoped autouse fixture: the ALSA config)
    capture,
    chunked,
    dc,
    paced,
    play,
    s16,
    sink_on,
)


def ramp(frames: int) -> bytes:
    """Samples 1, 2, 3, ... (never 0): each frame's place in the utterance is its value."""
    return (np.arange(1, frames + 1) % 30000).astype("<i2").tobytes()


def leading_zeros(samples: np.ndarray) -> int:
    nonzero = np.flatnonzero(samples)
    return int(nonzero[0]) if len(nonzero) else len(samples)


async def test_from_a_stopped_device_the_silence_is_the_time_left(tmp_path: Path) -> None:
    """Nothing queued (the ``null`` device reports no delay): the silence before the first
    frame is the time left to the instant, the lead-in counted in it, not added."""
    out = tmp_path / "out.raw"
    speech = dc(2205, 12000)
    async with sink_on(capture(out), fade_ms=0, lead_in_ms=50) as sink:
        before = time.monotonic()
        start_at = before + 0.25
        playback = await play(sink, speech, start_at=start_at)
    got = s16(out.read_bytes())
    silence = leading_zeros(got)
    assert playback.first_frame_at is not None
    assert silence == playback.lead_in_frames
    assert round((start_at - playback.first_frame_at) * RATE) <= silence
    assert silence <= round((start_at - before) * RATE)
    assert got[silence:].tobytes() == speech and playback.frames == 2205
    assert playback.skipped_frames == 0 and playback.gap_frames is None


async def test_an_instant_past_skips_the_frames_past(tmp_path: Path) -> None:
    """The device is started on half a period of silence, then the frames already past are
    dropped: the first frame written is the one due then; the fade-in starts there."""
    out = tmp_path / "out.raw"
    speech = ramp(RATE)
    async with sink_on(capture(out)) as sink:  # the default 8 ms fade
        before = time.monotonic()
        start_at = before - 0.1
        playback = await play(sink, speech, 4410, start_at=start_at)  # 100 ms chunks
        after = time.monotonic()
    got = s16(out.read_bytes())
    kick = playback.lead_in_frames
    skipped = playback.skipped_frames
    assert kick == round(RATE * 0.02) // 2 and not np.any(got[:kick])
    # the first chunk is all past: dropped; then the part of the next past by then
    assert round((before - start_at) * RATE) <= skipped <= round((after - start_at) * RATE)
    played = got[kick:]
    assert len(played) == playback.frames == RATE - skipped
    want = s16(speech)[skipped:]
    assert np.array_equal(played[FADE:-FADE], want[FADE:-FADE])  # in step, frame for frame
    assert np.all(np.abs(played[:FADE].astype(int)) <= np.abs(want[:FADE].astype(int)))
    assert played[0] == 0 < played[FADE - 1]  # faded in from the first frame played


async def test_a_chime_takes_the_instant_and_the_speech_follows_it(tmp_path: Path) -> None:
    out = tmp_path / "out.raw"
    chime_pcm, speech = dc(1102, 5000), dc(2205, 12000)
    async with sink_on(capture(out), fade_ms=0) as sink:
        before = time.monotonic()
        start_at = before + 0.2
        chime = await sink.begin(RATE, lead_in_ms=30, start_at=start_at)
        await sink.write(chime, chime_pcm)
        sink.end_nowait(chime)
        playback = await play(sink, speech)
        after = time.monotonic()
    got = s16(out.read_bytes())
    silence = leading_zeros(got)
    assert silence == chime.playback.lead_in_frames
    assert round((start_at - after) * RATE) <= silence <= round((start_at - before) * RATE)
    assert got[silence:].tobytes() == chime_pcm + speech
    assert playback.lead_in_frames == 0 and playback.start_offset_s is None


async def test_keep_open_silence_queued_is_counted_not_added(
    tmp_path: Path, pulse: PulseAudio
) -> None:
    """On a paced device running on keep-open silence, with more time left than silence
    queued: between the two utterances lie exactly the keep-open silence written before it
    (all of it played, none taken back) and its own silence, nothing else."""
    out = tmp_path / "out.raw"
    first, speech = dc(2205, 3000), dc(2205, 12000)
    async with sink_on(paced(out, pulse), fade_ms=0, keep_open_s=2, buffer_ms=200) as sink:
        await play(sink, first, 8820)
        await asyncio.sleep(0.1)  # the stimulus: the device idles on silence a while
        start_at = time.monotonic() + 0.6  # more than the two buffers the plugin queues
        playback = await play(sink, speech, 8820, start_at=start_at)
        underruns = sink.underruns
    got = s16(out.read_bytes())
    assert underruns == 0
    assert got[:2205].tobytes() == first
    between = leading_zeros(got[2205:])
    assert playback.gap_frames is not None and playback.gap_frames > 0
    assert between == playback.gap_frames + playback.lead_in_frames
    assert got[2205 + between : 2205 + between + 2205].tobytes() == speech
    # the time left less what was queued: less than the whole 600 ms
    assert 0 < playback.lead_in_frames < RATE * 0.6


async def test_a_first_chunk_shorter_than_the_fade_waits_for_more(tmp_path: Path) -> None:
    """Chunks of 50 frames (the fade is 176): the utterance is placed once there is speech to
    write after its fade, so its silence is followed by its frames without a gap; one shorter
    than its fade in all is placed when it ends."""
    out = tmp_path / "out.raw"
    speech, short = dc(2205, 12000), dc(100, 9000)
    async with sink_on(capture(out)) as sink:
        start_at = time.monotonic() + 0.2
        long = await play(sink, speech, 100, start_at=start_at)
        await sink.wait_idle()
        before = time.monotonic()
        start_at = before + 0.1
        tiny = await play(sink, short, 100, start_at=start_at)
        after = time.monotonic()
    got = s16(out.read_bytes())
    first = leading_zeros(got)
    assert first == long.lead_in_frames + 1  # the fade-in's first sample is 0
    heard = got[first - 1 : first - 1 + 2205]
    assert np.all(heard[FADE:-FADE] == 12000) and long.frames == 2205
    rest = got[first - 1 + 2205 :]
    assert leading_zeros(rest) == tiny.lead_in_frames + 1 and tiny.frames == 100
    silence = tiny.lead_in_frames
    assert round((start_at - after) * RATE) <= silence <= round((start_at - before) * RATE)


async def test_an_utterance_aborted_before_its_instant_is_never_heard(
    tmp_path: Path, pulse: PulseAudio
) -> None:
    out = tmp_path / "out.raw"
    async with sink_on(paced(out, pulse)) as sink:
        utt = await sink.begin(RATE, start_at=time.monotonic() + 1.0)
        for part in chunked(dc(4410, 12000), 882):
            await sink.write(utt, part)
        await asyncio.sleep(0.2)  # the stimulus: aborted while its silence plays
        cut = await sink.abort(utt)
    got = s16(out.read_bytes())
    assert cut.interrupted and cut.frames == 0 and cut.lead_in_frames > 0
    assert len(got) >= cut.lead_in_frames and not np.any(got)  # (an underrun's pre-roll too)


async def test_a_start_instant_must_be_a_number(tmp_path: Path) -> None:
    async with sink_on(capture(tmp_path / "out.raw")) as sink:
        with pytest.raises(ValueError, match="start_at"):
            await sink.begin(RATE, start_at=float("nan"))


def test_the_device_delay_counts_what_a_sound_server_holds(
    tmp_path: Path, pulse: PulseAudio
) -> None:
    """``snd_pcm_delay`` (through the pyalsaaudio PCM's handle) counts the frames the
    PulseAudio plugin has already handed to the server, which the buffer pointer (``avail``)
    shows as played: right after a buffer is written, the pointer says about nothing is
    queued while the delay says the whole buffer is."""
    device = PcmDevice(paced(tmp_path / "out.raw", pulse), 20, 4)
    device.open(RATE)
    try:
        written = device.write(bytes(device.buffer_frames * 2))
        queued, delay = device.queued(), device.delay()
        assert written == device.buffer_frames
        assert queued < device.period_frames
        assert device.buffer_frames - device.period_frames < delay <= device.buffer_frames
    finally:
        device.close()


def test_the_handle_is_trusted_only_when_the_pcm_holds_what_it_was_opened_with(
    tmp_path: Path,
) -> None:
    pcm = alsaaudio.PCM(
        alsaaudio.PCM_PLAYBACK, device=capture(tmp_path / "out.raw"), channels=1, rate=RATE,
        format=alsaaudio.PCM_FORMAT_S16_LE, periodsize=441, periods=4,
    )  # fmt: skip
    try:
        assert pcm_handle(pcm, RATE) is not None
        assert pcm_handle(pcm, RATE + 1) is None  # not the layout known: the pointer is used
    finally:
        pcm.close()


def test_a_drained_pcm_is_prepared_ahead_and_a_dropped_one_is_left_prepared(
    tmp_path: Path,
) -> None:
    """Without the GIL, through the handle: a drop leaves the PCM prepared, and a drained one
    is prepared once (a prime before speech), so pyalsaaudio's write has nothing to prepare."""
    pcm = alsaaudio.PCM(
        alsaaudio.PCM_PLAYBACK, device=capture(tmp_path / "out.raw"), channels=1, rate=RATE,
        format=alsaaudio.PCM_FORMAT_S16_LE, periodsize=441, periods=4,
    )  # fmt: skip
    try:
        handle = pcm_handle(pcm, RATE)
        assert handle is not None
        assert pcm.write(bytes(441 * 2)) == 441
        pcm_drop(handle)
        assert pcm.state() == alsaaudio.PCM_STATE_PREPARED
        assert not pcm_prepare(handle), "already prepared: left as it is"
        assert pcm.write(bytes(441 * 2)) == 441
        pcm.drain()
        assert pcm.state() == alsaaudio.PCM_STATE_SETUP
        assert pcm_prepare(handle)
        assert pcm.state() == alsaaudio.PCM_STATE_PREPARED
        assert pcm.write(bytes(441 * 2)) == 441
    finally:
        pcm.close()
