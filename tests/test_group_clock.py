"""The group clock's estimator on synthetic exchanges: pure code, the truth known exactly.

A node's local clock L and the reference's clock R(L) = L + offset + drift·(L - L0): each
exchange is simulated with chosen one-way delays and turnaround, so every estimate can be
compared with the truth (docs/protocols.md §15).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import pytest

from edgespeak.group.clock import (
    DRIFT_PRIOR,
    FIT_SPAN_S,
    WINDOW_S,
    GroupClock,
    LocalClock,
    Sample,
    keep_quickest,
)

L0 = 86_400.0  # local clocks read like a day-old monotonic clock


class Truth:
    """The reference's clock as a function of this node's local clock."""

    def __init__(self, offset_s: float, drift_ppm: float) -> None:
        self.offset_s = offset_s
        self.drift = drift_ppm / 1e6

    def group(self, local: float) -> float:
        return local + self.offset_s + self.drift * (local - L0)

    def exchange(self, t1: float, up: float, turn: float, down: float) -> Sample:
        """One ping sent at local ``t1``: ``up``/``down`` one-way delays, ``turn`` the
        reference's turnaround (seconds of local time)."""
        t2 = self.group(t1 + up)
        t3 = self.group(t1 + up + turn)
        return Sample(t1, t2, t3, t1 + up + turn + down)


def clock(interval_s: float = 2.0, max_error_ms: float = 2.0) -> GroupClock:
    c = GroupClock("b", LocalClock(), interval_s=interval_s, max_error_s=max_error_ms / 1e3)
    c.set_reference("a")
    return c


def jittery(rng: random.Random, jitter_s: float = 0.003) -> tuple[float, float, float]:
    """Network-like delays: a floor, exponential jitter (mean ``jitter_s`` up, twice that
    down), and now and then a slow leg; the two legs independent (asymmetric)."""
    up = 0.0004 + rng.expovariate(1 / jitter_s) + (0.03 if rng.random() < 0.1 else 0.0)
    down = 0.0007 + rng.expovariate(0.5 / jitter_s) + (0.05 if rng.random() < 0.1 else 0.0)
    return up, 0.0002 + rng.expovariate(1 / 0.0005), down


def schedule(start: float, seconds: float, interval_s: float = 2.0) -> Iterator[float]:
    """Ping times: a burst of 8, 20 ms apart, then one per interval."""
    for i in range(8):
        yield start + 0.02 * i
    t = start + interval_s
    while t < start + seconds:
        yield t
        t += interval_s


def feed(c: GroupClock, truth: Truth, seconds: float, seed: int, jitter_s: float = 0.003) -> float:
    """Exchanges for ``seconds`` from L0; returns the local time of the last pong."""
    rng = random.Random(seed)
    last = L0
    for t1 in schedule(L0, seconds):
        sample = truth.exchange(t1, *jittery(rng, jitter_s))
        c.add(sample)
        last = sample.t4
    return last


def test_sample_offset_and_delay_follow_the_four_timestamps() -> None:
    s = Truth(3.7, 0).exchange(L0, up=0.002, turn=0.001, down=0.004)
    assert s.delay == pytest.approx(0.006, abs=1e-9)
    assert s.offset == pytest.approx(3.7 - 0.001, abs=1e-9)  # (up - down)/2 of asymmetry
    assert abs(s.offset - 3.7) <= s.delay / 2


def test_local_clock_skews_monotonic_and_inverts() -> None:
    local = LocalClock(3.7, 400, source=lambda: 1000.0)
    assert local.now() == pytest.approx(1000.0 * 1.0004 + 3.7)
    assert local.to_monotonic(local.from_monotonic(1234.5)) == pytest.approx(1234.5)


def test_an_offset_of_seconds_is_found_exactly_with_symmetric_delays() -> None:
    c, truth = clock(), Truth(-3.7, 0)
    for t1 in schedule(L0, 4):
        c.add(truth.exchange(t1, 0.0005, 0.0005, 0.0005))
    now = L0 + 4.5
    assert c.to_group(now) == pytest.approx(truth.group(now), abs=1e-9)
    assert c.error_at(now) == pytest.approx(0.0005 + DRIFT_PRIOR * 2.5, abs=1e-5)  # from L0+2
    assert c.reason_at(now) is None


@pytest.mark.parametrize("seed", range(10))
def test_drift_of_hundreds_of_ppm_is_measured_through_jittery_asymmetric_delays(
    seed: int,
) -> None:
    """A LAN: 1 ms of jitter one way, 2 ms the other, one exchange in ten 30-50 ms slow."""
    c, truth = clock(), Truth(3.7, 400)
    last = feed(c, truth, seconds=60, seed=seed, jitter_s=0.001)
    assert c.drift_ppm() == pytest.approx(400, abs=25)
    for now in (last, last + 1.0, last + 2.0):
        error = c.error_at(now)
        assert abs(c.to_group(now) - truth.group(now)) <= error <= 0.003


@pytest.mark.parametrize("seed", range(40))
def test_the_error_bound_covers_the_truth(seed: int) -> None:
    rng = random.Random(1000 + seed)
    truth = Truth(rng.uniform(-5, 5), rng.uniform(-500, 500))
    c = clock()
    for t1 in schedule(L0, rng.uniform(1, 90)):
        sample = truth.exchange(t1, *jittery(rng))
        c.add(sample)
        for now in (sample.t4, sample.t4 + 1.0, sample.t4 + 5.0):
            assert abs(c.to_group(now) - truth.group(now)) <= c.error_at(now) + 1e-9


def test_the_minimum_delay_filter_ignores_slow_lopsided_exchanges() -> None:
    """Most exchanges wait 40 ms on the way back only: their θ is 20 ms off. The filter keeps
    the few quick ones (weighted by 1/δ²); an average would be ~18 ms off."""
    c, truth = clock(), Truth(1.25, 0)
    for i, t1 in enumerate(schedule(L0, 30)):
        down = 0.001 if i % 5 == 0 else 0.041
        c.add(truth.exchange(t1, 0.001, 0.0003, down))
    now = L0 + 30
    assert abs(c.to_group(now) - truth.group(now)) <= 50e-6
    assert c.error_at(now) < 0.002 and c.reason_at(now) is None


def test_keep_quickest_takes_one_sample_per_slice_near_the_smallest_delay() -> None:
    truth = Truth(0, 0)
    samples = [truth.exchange(L0 + 0.1 * i, 0.001 * (1 + i % 4), 0, 0.001) for i in range(60)]
    samples.append(truth.exchange(L0 + 3.05, 0.05, 0, 0.05))
    kept = keep_quickest(samples)
    assert [s.delay for s in kept] == pytest.approx([0.002, 0.002, 0.002])
    assert kept == sorted(kept, key=lambda s: s.at)


def test_before_the_drift_is_fitted_the_bound_allows_for_an_unknown_drift() -> None:
    c, truth = clock(), Truth(0.5, 400)
    for t1 in schedule(L0, FIT_SPAN_S / 2):
        c.add(truth.exchange(t1, 0.0005, 0.0001, 0.0005))
    assert c.drift_ppm() == 0.0
    for ahead in (0.0, 1.0, 4.0):
        now = L0 + FIT_SPAN_S / 2 + ahead
        assert abs(c.to_group(now) - truth.group(now)) <= c.error_at(now)
    assert c.error_at(L0 + 100) > c.error_at(L0 + 10)


def test_a_silent_reference_makes_the_clock_unsynced_with_a_reason() -> None:
    c, truth = clock(interval_s=2.0), Truth(2.0, 0)
    for t1 in schedule(L0, 20):
        c.add(truth.exchange(t1, 0.0003, 0.0001, 0.0003))
    last = L0 + 18.0007
    assert c.reason_at(last + 5.9) is None
    reason = c.reason_at(last + 6.5)
    assert reason is not None and "a has not answered for 6.5 s" in reason


def test_a_bound_above_max_clock_error_is_not_synced() -> None:
    c, truth = clock(max_error_ms=0.5), Truth(2.0, 0)
    c.add(truth.exchange(L0, 0.002, 0.0001, 0.002))
    reason = c.reason_at(L0 + 0.01)
    assert reason is not None and "exceeds max_clock_error_ms 0.5" in reason


def test_without_samples_or_reference_there_is_no_estimate() -> None:
    c = GroupClock("b", LocalClock(), interval_s=2.0, max_error_s=0.002)
    assert c.reason_at(L0) == "no reference: no live node of the group is known"
    c.set_reference("a")
    assert c.reason_at(L0) == "no clock sample from the reference a yet"
    assert math.isinf(c.error_at(L0)) and c.to_group(L0) == L0


def test_the_reference_is_group_time_itself() -> None:
    c = clock()
    c.set_reference("b")
    c.add(Truth(5, 0).exchange(L0, 0.001, 0, 0.001))  # ignored: nobody to sync to
    assert c.is_reference and c.reason_at(L0) is None and c.error_at(L0) == 0.0
    assert c.to_group(L0) == L0 == c.to_local(L0) and c.sample_count == 0


def test_a_new_reference_forgets_the_old_one_s_samples() -> None:
    c = clock()
    feed(c, Truth(3.0, 0), seconds=10, seed=4)
    assert c.sample_count > 0
    assert c.set_reference("a0") is True
    assert c.sample_count == 0 and c.reason_at(L0 + 10) is not None
    assert c.set_reference("a0") is False


def test_to_local_inverts_to_group() -> None:
    c, truth = clock(), Truth(-2.5, -300)
    last = feed(c, truth, seconds=40, seed=5)
    for local in (last, last + 7.25, L0):
        assert c.to_local(c.to_group(local)) == pytest.approx(local, abs=1e-9)


def test_monotonic_instants_convert_both_ways() -> None:
    skew = LocalClock(3.7, 400)
    c = GroupClock("b", skew, interval_s=2.0, max_error_s=0.002)
    c.set_reference("a")
    for t1 in schedule(L0, 20):  # the reference's clock is the monotonic one itself
        mono = skew.to_monotonic(t1)
        c.add(Sample(t1, mono + 0.0005, mono + 0.0006, skew.from_monotonic(mono + 0.0011)))
    mono = skew.to_monotonic(L0 + 21)
    assert c.group_at(mono) == pytest.approx(mono, abs=1e-6)
    assert c.monotonic_at(c.group_at(mono)) == pytest.approx(mono, abs=1e-9)


def test_samples_older_than_the_window_are_forgotten() -> None:
    c, truth = clock(interval_s=1.0), Truth(0, 0)
    for i in range(200):
        c.add(truth.exchange(L0 + i, 0.001, 0, 0.001))
    assert c.sample_count == pytest.approx(WINDOW_S, abs=1)


def test_a_spell_without_reference_keeps_the_samples_of_the_same_one() -> None:
    c, truth = clock(), Truth(3.0, 0)
    last = feed(c, truth, seconds=10, seed=6)
    kept = c.sample_count
    assert c.set_reference(None) is True
    assert c.reason_at(last) == "no reference: no live node of the group is known"
    assert c.set_reference("a") is True
    assert c.sample_count == kept and c.reason_at(last) is None
