"""The sink's sample arithmetic (edgespeak.audio.dsp) on plain arrays: envelopes, gain, hold."""

from __future__ import annotations

import numpy as np
import pytest

from edgespeak.audio import dsp


def pcm(*values: int) -> bytes:
    return np.array(values, dtype="<i2").tobytes()


def values(data: bytes) -> list[int]:
    return [int(v) for v in np.frombuffer(data, dtype="<i2")]


def test_fade_in_starts_at_zero_and_rises_monotonically_below_one() -> None:
    env = dsp.fade_in(176)
    assert len(env) == 176
    assert env[0] == 0.0
    assert np.all(np.diff(env) > 0)
    assert env[-1] < 1.0
    assert env[88] == pytest.approx(0.5)


def test_fade_out_is_the_fade_in_reversed_and_ends_at_zero() -> None:
    out = dsp.fade_out(100)
    assert out[-1] == 0.0
    assert np.all(np.diff(out) < 0)
    assert np.array_equal(out, dsp.fade_in(100)[::-1])


def test_empty_and_negative_fades() -> None:
    assert len(dsp.fade_in(0)) == 0
    with pytest.raises(ValueError):
        dsp.fade_in(-1)


def test_gain_one_without_envelope_returns_the_input_itself() -> None:
    data = pcm(1, -2, 32767, -32768)
    assert dsp.shape(data, 1.0) is data


def test_gain_rounds_to_nearest_and_clips_to_s16() -> None:
    assert values(dsp.shape(pcm(3, -3, 10001, -32768), 0.5)) == [2, -2, 5000, -16384]
    assert values(dsp.shape(pcm(20000, -20000, 5), 2.0)) == [32767, -32768, 10]
    assert values(dsp.shape(pcm(20000, -20000), 0.0)) == [0, 0]


def test_envelope_at_start_or_end_leaves_the_other_samples_byte_identical() -> None:
    data = pcm(*range(1000, 1010))
    head = dsp.shape(data, 1.0, np.array([0.0, 0.5]))
    assert values(head) == [0, 500, *range(1002, 1010)]
    assert head[4:] == data[4:]
    tail = dsp.shape(data, 1.0, np.array([0.5, 0.0]), at_end=True)
    assert values(tail) == [*range(1000, 1008), 504, 0]
    both = dsp.shape(data, 0.5, np.array([0.5, 0.0]), at_end=True)
    assert values(both) == [500, 500, 501, 502, 502, 502, 503, 504, 252, 0]


def test_an_envelope_longer_than_the_samples_is_refused() -> None:
    with pytest.raises(ValueError, match="longer"):
        dsp.shape(pcm(1, 2), 1.0, np.ones(3))


def test_hold_pads_with_the_last_value_or_cuts() -> None:
    assert values(dsp.hold(pcm(5, 7), 4)) == [5, 7, 7, 7]
    assert values(dsp.hold(b"", 3, last=-9)) == [-9, -9, -9]
    assert values(dsp.hold(pcm(1, 2, 3, 4), 2)) == [1, 2]


def test_last_sample() -> None:
    assert dsp.last_sample(pcm(1, -300)) == -300
    assert dsp.last_sample(b"", default=4) == 4
