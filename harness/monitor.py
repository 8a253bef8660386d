"""What a listener hears: the output of a PulseAudio null sink (its monitor source), recorded
with a time stamp on every arrival, so the moment a sound came out can be read back.

A separate process runs ``parec`` on ``<sink>.monitor`` (s16le mono at ``rate_hz``, 1 ms
latency asked for) and reads its output blocked in select(2), stamping each read with
``time.monotonic()`` (CLOCK_MONOTONIC, comparable across processes); a thread of the measured
process would first have to take the GIL from its event loop. The samples go to a file, the
(time, bytes) pairs are sent back when the recording stops.

Sample ``j`` is taken to have come out at its read's stamp less the samples after it in that
read (``/ rate_hz``): the sink had rendered the read's last sample when it arrived. The sink's
render ahead and the recording's own latency (a few ms) are not subtracted: every path measured
this way pays them alike, so compare paths, not the absolute milliseconds.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import subprocess
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from harness.stack import PulseAudio

RATE_HZ = 48000  # the null sink's own rate here: no resampling on the recording side
READ_BYTES = 1 << 16
Arrival = tuple[float, int]  # time.monotonic() seconds, bytes


def _record(command: list[str], env: dict[str, str], out: str, conn: Connection) -> None:
    """Run ``command`` (parec), append what it prints to ``out`` and stamp every read, until
    told to stop; say "ready" once the first samples are in, and at the end send back the
    (``time.monotonic()`` seconds, bytes) pairs."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    fd, ctl = proc.stdout.fileno(), conn.fileno()
    arrivals: list[Arrival] = []
    with open(out, "wb") as sink:
        while True:
            ready, _, _ = select.select([fd, ctl], [], [])
            now = time.monotonic()
            if fd in ready:
                data = os.read(fd, READ_BYTES)
                if not data:  # parec is gone
                    break
                sink.write(data)
                if not arrivals:  # the sink's output is coming in: recording
                    conn.send("ready")
                arrivals.append((now, len(data)))
            if ctl in ready:
                conn.recv()
                break
    proc.terminate()
    proc.wait(5)
    conn.send(arrivals)


class Recording:
    """A finished recording: ``samples`` (s16 mono at ``rate_hz`` Hz, e.g. a memory map of the
    file) and the reads they came in, from which each sample's time is known: the
    ``time.monotonic()`` second it came out of the sink."""

    def __init__(self, samples: NDArray[np.int16], arrivals: list[Arrival], rate_hz: int) -> None:
        self.rate_hz = rate_hz
        self._stamps = np.array([stamp for stamp, _ in arrivals], dtype=np.float64)
        # samples received by the end of each read (a read may end inside a sample)
        self._ends = np.cumsum([nbytes for _, nbytes in arrivals], dtype=np.int64) // 2
        self.samples = samples[: int(self._ends[-1]) if len(self._ends) else 0]

    def time_of(self, index: int) -> float:
        """When sample ``index`` came out (``time.monotonic()`` s)."""
        read = int(np.searchsorted(self._ends, index, side="right"))
        return float(self._stamps[read] - (self._ends[read] - 1 - index) / self.rate_hz)

    def index_at(self, when: float) -> int:
        """The first sample that came out at or after ``when`` (the length when none did)."""
        read = int(np.searchsorted(self._stamps, when))  # the first read stamped at or after
        if read >= len(self._stamps):
            return len(self.samples)
        start = int(self._ends[read - 1]) if read else 0
        late = int((self._stamps[read] - when) * self.rate_hz)  # samples before the stamp
        return max(start, int(self._ends[read]) - 1 - late)

    def first_above(self, level: int, after: float, before: float = float("inf")) -> float | None:
        """The time (``time.monotonic()`` s) of the first sample at or above ``level`` in
        magnitude that came out in [``after``, ``before``), or None when there is none."""
        index = self._find(level, after, before, last=False)
        return None if index is None else self.time_of(index)

    def last_above(self, level: int, after: float, before: float) -> float | None:
        """The time of the last sample at or above ``level`` in magnitude that came out in
        [``after``, ``before``), or None when there is none."""
        index = self._find(level, after, before, last=True)
        return None if index is None else self.time_of(index)

    def longest_below(self, level: int, after: float, before: float) -> float:
        """Seconds of the longest run of samples below ``level`` in magnitude among those that
        came out in [``after``, ``before``): the longest silence there (0.0 when none)."""
        lo, hi = self.index_at(after), self.index_at(before)
        quiet = np.abs(self.samples[lo:hi].astype(np.int32)) < level
        edges = np.flatnonzero(np.diff(np.concatenate(([0], quiet.astype(np.int8), [0]))))
        runs = edges[1::2] - edges[::2]  # lengths of the runs of quiet samples
        return float(runs.max()) / self.rate_hz if len(runs) else 0.0

    def _find(self, level: int, after: float, before: float, *, last: bool) -> int | None:
        lo, hi = self.index_at(after), self.index_at(before)
        loud = np.flatnonzero(np.abs(self.samples[lo:hi].astype(np.int32)) >= level)
        if not len(loud):
            return None
        return int(lo + (loud[-1] if last else loud[0]))


class MonitorRecorder:
    """Records ``pulse``'s null sink output from :meth:`start` to :meth:`stop`; the samples go
    to ``path``. Raises RuntimeError when the recording does not start (parec missing: the
    ``pulseaudio-utils`` package)."""

    def __init__(self, pulse: PulseAudio, path: Path, rate_hz: int = RATE_HZ) -> None:
        self.path = path
        self.rate_hz = rate_hz
        self._command = [
            "parec", f"--device={pulse.SINK}.monitor", "--raw", "--format=s16le",
            "--channels=1", f"--rate={rate_hz}", "--latency-msec=1", "--client-name=monitor",
        ]  # fmt: skip
        self._env = dict(os.environ, PULSE_SERVER=pulse.server)
        self._conn: Connection | None = None
        self._proc: Any = None

    def start(self) -> None:
        """Start recording; returns once the reader runs. Raises RuntimeError."""
        ctx = multiprocessing.get_context("spawn")  # safe whatever threads this process has
        self._conn, child = ctx.Pipe()
        args = (self._command, self._env, str(self.path), child)
        self._proc = ctx.Process(target=_record, args=args, daemon=True)
        self._proc.start()
        if not self._conn.poll(30) or self._conn.recv() != "ready":
            raise RuntimeError("the monitor recording did not start")

    def stop(self) -> Recording:
        """Stop recording; everything recorded, with each sample's time."""
        assert self._conn is not None, "not started"
        self._conn.send("stop")
        arrivals: list[Arrival] = self._conn.recv() if self._conn.poll(10) else []
        self.close()
        empty = not self.path.exists() or self.path.stat().st_size < 2
        samples = np.zeros(0, np.int16) if empty else np.memmap(self.path, "<i2", mode="r")
        return Recording(samples, arrivals, self.rate_hz)

    def close(self) -> None:
        """Make sure the recording process is gone (after :meth:`stop`, or instead of it)."""
        if self._conn is not None and self._proc is not None and self._proc.is_alive():
            with contextlib.suppress(OSError, ValueError):
                self._conn.send("stop")
        if self._proc is not None:
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(5)
            self._proc = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@contextlib.contextmanager
def recording(pulse: PulseAudio, path: Path) -> Iterator[list[Recording]]:
    """Record ``pulse``'s sink output while the block runs; the list yielded holds the
    :class:`Recording` once the block has left."""
    recorder = MonitorRecorder(pulse, path)
    recorder.start()
    done: list[Recording] = []
    try:
        yield done
    finally:
        done.append(recorder.stop())
