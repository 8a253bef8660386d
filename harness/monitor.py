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
    """A finished recording: ``samples`` (s16 mono at ``rate_hz`` Hz) and ``times``, the
    ``time.monotonic()`` second each sample came out of the sink."""

    def __init__(self, samples: NDArray[np.int16], arrivals: list[Arrival], rate_hz: int) -> None:
        self.samples = samples
        self.rate_hz = rate_hz
        times = np.empty(len(samples), dtype=np.float64)
        start = 0
        for stamp, nbytes in arrivals:
            n = min(nbytes // 2, len(samples) - start)
            # the read's last sample came out at its stamp, the ones before it earlier
            times[start : start + n] = stamp - np.arange(n - 1, -1, -1) / rate_hz
            start += n
        self.times = times[:start]
        self.samples = samples[:start]

    def first_above(self, level: int, after: float, before: float = float("inf")) -> float | None:
        """The time (``time.monotonic()`` s) of the first sample at or above ``level`` in
        magnitude that came out in [``after``, ``before``), or None when there is none."""
        index = self._find(level, after, before, last=False)
        return None if index is None else float(self.times[index])

    def last_above(self, level: int, after: float, before: float) -> float | None:
        """The time of the last sample at or above ``level`` in magnitude that came out in
        [``after``, ``before``), or None when there is none."""
        index = self._find(level, after, before, last=True)
        return None if index is None else float(self.times[index])

    def longest_below(self, level: int, after: float, before: float) -> float:
        """Seconds of the longest run of samples below ``level`` in magnitude among those that
        came out in [``after``, ``before``): the longest silence there (0.0 when none)."""
        lo, hi = np.searchsorted(self.times, [after, before])
        quiet = np.abs(self.samples[lo:hi].astype(np.int32)) < level
        edges = np.flatnonzero(np.diff(np.concatenate(([0], quiet.astype(np.int8), [0]))))
        runs = edges[1::2] - edges[::2]  # lengths of the runs of quiet samples
        return float(runs.max()) / self.rate_hz if len(runs) else 0.0

    def _find(self, level: int, after: float, before: float, *, last: bool) -> int | None:
        lo, hi = np.searchsorted(self.times, [after, before])
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
        self._proc.join(5)
        samples = np.fromfile(self.path, dtype="<i2") if self.path.exists() else np.zeros(0)
        return Recording(samples.astype(np.int16), arrivals, self.rate_hz)


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
