"""The group clock: this node's local clock and its estimated offset and drift to the group's.

Pure code, no I/O. Every time here is in seconds. A node's **local clock** is
``time.monotonic()``, skewed by the test-only ``[group] test_clock_*`` keys
(:class:`LocalClock`). **Group time** is the local clock of the group's reference node.

:class:`GroupClock` turns ping/pong exchanges with the reference (four timestamps, NTP style,
RFC 5905 §8: docs/protocols.md §15) into ``group = local + offset(local)``, with
``offset(t) = a + b·(t - t0)``:

- only the samples of the last :data:`WINDOW_S` seconds are kept;
- of those, the minimum-round-trip filter keeps the sample of smallest delay δ in each
  :data:`BIN_S`-second slice of the window, and of these the :data:`MIN_KEPT` quickest and any
  other whose δ is within :data:`DELAY_SLACK` x δ_min (at least :data:`DELAY_SLACK_MIN_S`) of
  the smallest: a sample's offset θ is off by at most δ/2 (the unknown split of the round
  trip), so the quick ones are the trustworthy ones (RFC 5905 §10, Mills' clock filter);
- once the kept samples span at least :data:`FIT_SPAN_S`, ``a`` and ``b`` (the drift) come from
  least squares over them (weighted by 1/δ², the quick ones count most), else ``a`` is the
  smallest-δ sample's θ and ``b`` is 0;
- the error bound at local time t is the smallest, over the kept samples j, of
  ``δ_j/2 + |fit(t_j) - θ_j| + drift_uncertainty x |t - t_j|``, where the drift uncertainty is,
  once fitted, twice the standard error of ``b`` or the slope error the first and last kept
  samples allow ((δ_first + δ_last)/2 over their distance), whichever is larger, plus
  :data:`DRIFT_FLOOR`; before, :data:`DRIFT_PRIOR` (what a crystal may be off by).

Synced when the bound is at most ``max_error_s`` and the newest sample (of any delay: it shows
that the reference still answers) is at most ``FRESH_INTERVALS x interval_s`` old.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_S = 60.0  # samples older than this (local seconds) are forgotten
BIN_S = 2.0  # the filter keeps the quickest sample of each slice this long
FIT_SPAN_S = 10.0  # kept samples spanning this long: drift by least squares
DELAY_SLACK = 1.0  # kept: δ ≤ δ_min + max(DELAY_SLACK x δ_min, DELAY_SLACK_MIN_S)
DELAY_SLACK_MIN_S = 0.0005
MIN_KEPT = 6  # the quickest this many slices are kept whatever their delay
DRIFT_PRIOR = 500e-6  # drift assumed possible before it is measured (a poor crystal)
DRIFT_FLOOR = 1e-6  # added to the measured drift's uncertainty
FRESH_INTERVALS = 3.0  # the newest sample must be at most this many intervals old


@dataclass(frozen=True)
class LocalClock:
    """This node's clock: ``monotonic * (1 + drift_ppm / 1e6) + offset_s`` (seconds).

    ``offset_s`` and ``drift_ppm`` are 0 in production; tests skew a node with them (``[group]
    test_clock_offset_s`` / ``test_clock_drift_ppm``). ``source``: the monotonic clock read,
    ``time.monotonic`` (pure tests hand in their own)."""

    offset_s: float = 0.0
    drift_ppm: float = 0.0
    source: Callable[[], float] = time.monotonic

    def now(self) -> float:
        """The local clock now (seconds)."""
        return self.from_monotonic(self.source())

    def from_monotonic(self, mono: float) -> float:
        """Local time (s) of the ``time.monotonic()`` instant ``mono`` (s)."""
        return mono * (1.0 + self.drift_ppm / 1e6) + self.offset_s

    def to_monotonic(self, local: float) -> float:
        """The ``time.monotonic()`` instant (s) at which the local clock reads ``local`` (s)."""
        return (local - self.offset_s) / (1.0 + self.drift_ppm / 1e6)


@dataclass(frozen=True)
class Sample:
    """One exchange, every time on the local clock of who stamped it (seconds): ``t1`` ping
    sent (here), ``t2`` ping received and ``t3`` pong sent (at the reference), ``t4`` pong
    received (here)."""

    t1: float
    t2: float
    t3: float
    t4: float

    @property
    def offset(self) -> float:
        """θ = ((t2 - t1) + (t3 - t4)) / 2: reference minus local (s), exact when the two
        one-way delays are equal, off by at most δ/2 otherwise."""
        return ((self.t2 - self.t1) + (self.t3 - self.t4)) / 2.0

    @property
    def delay(self) -> float:
        """δ = (t4 - t1) - (t3 - t2): the round trip minus the reference's turnaround (s)."""
        return (self.t4 - self.t1) - (self.t3 - self.t2)

    @property
    def at(self) -> float:
        """The local instant (s) the sample describes: the middle of the round trip."""
        return (self.t1 + self.t4) / 2.0


@dataclass(frozen=True)
class Fit:
    """``offset(t) = a + b·(t - t0)`` (seconds, local t); ``b_error``: the drift's
    uncertainty (s/s); ``kept``: the samples the filter kept."""

    a: float
    b: float
    t0: float
    b_error: float
    kept: tuple[Sample, ...]

    def offset(self, local: float) -> float:
        """Group minus local time (s) at local time ``local`` (s)."""
        return self.a + self.b * (local - self.t0)

    def error(self, local: float) -> float:
        """The error bound (s) of :meth:`offset` at local time ``local``."""
        return min(
            s.delay / 2.0 + abs(self.offset(s.at) - s.offset) + self.b_error * abs(local - s.at)
            for s in self.kept
        )


def keep_quickest(samples: list[Sample]) -> list[Sample]:
    """The minimum-round-trip filter: the smallest-δ sample of each :data:`BIN_S` slice, then
    of those the :data:`MIN_KEPT` quickest and the ones close to the smallest δ (module
    docstring), in time order."""
    best: dict[int, Sample] = {}
    for s in samples:
        slot = math.floor(s.at / BIN_S)
        if slot not in best or s.delay < best[slot].delay:
            best[slot] = s
    by_delay = sorted(best.values(), key=lambda s: s.delay)
    limit = by_delay[0].delay + max(DELAY_SLACK * by_delay[0].delay, DELAY_SLACK_MIN_S)
    kept = by_delay[:MIN_KEPT] + [s for s in by_delay[MIN_KEPT:] if s.delay <= limit]
    return sorted(kept, key=lambda s: s.at)


def fit(samples: list[Sample]) -> Fit:
    """Offset and drift from ``samples`` (at least one): least squares over the kept ones when
    they span :data:`FIT_SPAN_S`, else the quickest one's offset and no drift."""
    kept = keep_quickest(samples)
    t0 = kept[-1].at
    span = kept[-1].at - kept[0].at
    if len(kept) < 3 or span < FIT_SPAN_S:
        quickest = min(kept, key=lambda s: s.delay)
        return Fit(quickest.offset, 0.0, quickest.at, DRIFT_PRIOR, tuple(kept))
    # weighted least squares, weight 1/δ²: a sample's θ is off by up to δ/2
    ws = [1.0 / max(s.delay, DELAY_SLACK_MIN_S) ** 2 for s in kept]
    xs = [s.at - t0 for s in kept]
    ys = [s.offset for s in kept]
    w = sum(ws)
    mx = sum(wi * x for wi, x in zip(ws, xs, strict=True)) / w
    my = sum(wi * y for wi, y in zip(ws, ys, strict=True)) / w
    sxx = sum(wi * (x - mx) ** 2 for wi, x in zip(ws, xs, strict=True))
    b = sum(wi * (x - mx) * (y - my) for wi, x, y in zip(ws, xs, ys, strict=True)) / sxx
    a = my - b * mx
    residual = sum(wi * (y - a - b * x) ** 2 for wi, x, y in zip(ws, xs, ys, strict=True))
    b_se = math.sqrt(residual / (len(kept) - 2) / sxx)
    # the slope two end samples could give, each off by its δ/2: a floor under the statistics
    ends = (kept[0].delay + kept[-1].delay) / 2.0 / (kept[-1].at - kept[0].at)
    return Fit(a, b, t0, max(2.0 * b_se, ends) + DRIFT_FLOOR, tuple(kept))


class GroupClock:
    """This node's view of group time.

    ``node_id``: this node; ``local``: its clock; ``interval_s``: seconds between pings once
    synced; ``max_error_s``: the largest error bound (s) still counted as synced. The reference
    is set with :meth:`set_reference` (None: none known); while this node is the reference,
    group time is its local time (synced, error 0).
    """

    def __init__(
        self, node_id: str, local: LocalClock, *, interval_s: float, max_error_s: float
    ) -> None:
        self.node_id = node_id
        self.local = local
        self.interval_s = interval_s
        self.max_error_s = max_error_s
        self._reference: str | None = None
        self._samples_of: str | None = None  # the reference the samples were taken with
        self._samples: deque[Sample] = deque()
        self._fit: Fit | None = None

    @property
    def reference(self) -> str | None:
        """The reference's node id (None: no live reference known)."""
        return self._reference

    @property
    def is_reference(self) -> bool:
        """True while this node is the group's reference."""
        return self._reference == self.node_id

    def set_reference(self, node_id: str | None) -> bool:
        """Follow the reference ``node_id`` (None: none live for now). Samples are forgotten
        when a different node becomes the reference, kept through a spell without one (a
        broker restart empties the membership until the retained messages come back).
        Returns True when the reference changed (the caller then sends a burst of pings)."""
        if node_id == self._reference:
            return False
        self._reference = node_id
        if node_id is not None and node_id != self._samples_of:
            self._samples_of = node_id
            self._samples.clear()
            self._fit = None
        return True

    @property
    def sample_count(self) -> int:
        """Samples of the current reference held (the last :data:`WINDOW_S` seconds)."""
        return len(self._samples)

    def add(self, sample: Sample) -> None:
        """Take one exchange with the current reference (times in s, see :class:`Sample`).
        Samples older than :data:`WINDOW_S` are dropped; the fit is redone."""
        if self._reference is None or self.is_reference:
            return
        self._samples.append(sample)
        while self._samples and self._samples[0].at < sample.at - WINDOW_S:
            self._samples.popleft()
        self._fit = fit(list(self._samples))

    def offset_at(self, local: float) -> float:
        """Group minus local time (s) at local time ``local`` (0 without an estimate)."""
        if self.is_reference or self._fit is None:
            return 0.0
        return self._fit.offset(local)

    def to_group(self, local: float) -> float:
        """The group time (s) of local time ``local`` (s); the local time itself while there
        is no estimate (then :attr:`synced` is False)."""
        return local + self.offset_at(local)

    def to_local(self, group: float) -> float:
        """The local time (s) at which group time reads ``group`` (s)."""
        if self.is_reference or self._fit is None:
            return group
        f = self._fit  # group = l + a + b(l - t0)  ⇒  l = (group - a + b·t0) / (1 + b)
        return (group - f.a + f.b * f.t0) / (1.0 + f.b)

    def monotonic_at(self, group: float) -> float:
        """The ``time.monotonic()`` instant (s) at which group time reads ``group`` (s): what
        an ``Utterance.start_at`` takes."""
        return self.local.to_monotonic(self.to_local(group))

    def group_at(self, mono: float) -> float:
        """Group time (s) at the ``time.monotonic()`` instant ``mono`` (s)."""
        return self.to_group(self.local.from_monotonic(mono))

    def now_group(self) -> float:
        """Group time now (s)."""
        return self.to_group(self.local.now())

    def drift_ppm(self) -> float:
        """The measured drift of group time against local time (ppm; 0 before it is fitted)."""
        return 0.0 if self.is_reference or self._fit is None else self._fit.b * 1e6

    def error_at(self, local: float) -> float:
        """The error bound (s) of :meth:`to_group` at local time ``local``; inf without an
        estimate, 0 at the reference."""
        if self.is_reference:
            return 0.0
        if self._fit is None:
            return math.inf
        return self._fit.error(local)

    def reason_at(self, local: float) -> str | None:
        """Why group time is not synced at local time ``local`` (None: it is)."""
        if self.is_reference:
            return None
        if self._reference is None:
            return "no reference: no live node of the group is known"
        if not self._samples:
            return f"no clock sample from the reference {self._reference} yet"
        age = local - self._samples[-1].t4
        if age > FRESH_INTERVALS * self.interval_s:
            return f"the reference {self._reference} has not answered for {age:.1f} s"
        error = self.error_at(local)
        if error > self.max_error_s:
            return (
                f"clock error bound {error * 1e3:.2f} ms exceeds "
                f"max_clock_error_ms {self.max_error_s * 1e3:g}"
            )
        return None

    @property
    def error_s(self) -> float:
        """The error bound (s) now (inf without an estimate)."""
        return self.error_at(self.local.now())

    @property
    def reason(self) -> str | None:
        """Why group time is not synced now (None: it is)."""
        return self.reason_at(self.local.now())

    @property
    def synced(self) -> bool:
        """True while the estimate is fresh and within ``max_error_s``."""
        return self.reason is None
