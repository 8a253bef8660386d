"""First bytes out of ALSA, timed from outside the player: the ALSA ``file`` plugin writes into
a FIFO read by a separate process that stamps every arrival.

``default`` is ``plug`` → ``file`` → ``null`` (harness.stack.capture_alsa_conf with the FIFO as
output); ``null`` is not paced, so an utterance is accepted at CPU speed. The ``file`` plugin
write(2)s only what exceeds one ALSA buffer (``wbuf_used > buffer_bytes`` in alsa-lib's
pcm_file.c), flushing the rest on drain/drop, so what is observed is "first byte past one ALSA
buffer": on this unpaced sink, the first ``snd_pcm_writei`` plus microseconds (bench/cache_hit.py
has the strace details).

The reader is a process blocked in select(2), not a thread: woken by the data (tens of µs), where
a thread would first have to take the GIL from the event loop. It stamps each arrival with
``time.monotonic()`` (CLOCK_MONOTONIC, comparable across processes). Polling a file's size was
the alternative: it quantizes to the poll interval and a spinning poller takes CPU from the
player on a small machine.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fcntl
import multiprocessing
import os
import select
import struct
import termios
import time
from multiprocessing.connection import Connection
from pathlib import Path

PIPE_BYTES = 1 << 20  # FIFO capacity asked for, and read size, bytes
DRAIN_TIMEOUT_S = 5.0
Arrival = tuple[float, int]  # time.monotonic() seconds, bytes


def _read_fifo(path: str, conn: Connection) -> None:
    """Stamp every arrival on the FIFO at ``path`` until told to stop; send back the list of
    (``time.monotonic()`` seconds, bytes) pairs."""
    fd = os.open(path, os.O_RDWR)  # RDWR: the open does not block and no EOF between writers
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)  # writers are never held back by us
    arrivals: list[Arrival] = []
    conn.send("ready")
    ctl = conn.fileno()
    while True:
        ready, _, _ = select.select([fd, ctl], [], [])
        now = time.monotonic()
        if fd in ready:
            arrivals.append((now, len(os.read(fd, PIPE_BYTES))))
        elif ctl in ready:
            conn.recv()
            break
    conn.send(arrivals)


class FifoReader:
    """The FIFO at ``path`` (created here) that the ALSA ``file`` plugin writes to, and the
    process timing what comes out. Raises RuntimeError when the reader does not start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        # spawn, not fork: safe whatever threads this process has (the suite runs several benches)
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_read_fifo, args=(str(path), child), daemon=True)
        self._proc.start()
        if not self._conn.poll(30) or self._conn.recv() != "ready":
            raise RuntimeError("the FIFO reader did not start")
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)  # only to ask FIONREAD

    def unread(self) -> int:
        """Bytes in the FIFO not read yet."""
        return int(struct.unpack("i", fcntl.ioctl(self._fd, termios.FIONREAD, b"\0" * 4))[0])

    async def drained(self) -> None:
        """Return once the reader has taken everything written so far (polled every 1 ms).

        Raises TimeoutError after DRAIN_TIMEOUT_S seconds.
        """
        for _ in range(int(DRAIN_TIMEOUT_S * 1000)):
            if not self.unread():
                return
            await asyncio.sleep(0.001)
        raise TimeoutError(f"the FIFO reader left {self.unread()} bytes unread")

    def stop(self) -> list[Arrival]:
        """Stop the reader; every arrival, oldest first."""
        self._conn.send("stop")
        arrivals: list[Arrival] = self._conn.recv()
        self._proc.join(5)
        os.close(self._fd)
        return arrivals


def between(arrivals: list[Arrival], start: float, end: float) -> tuple[float | None, int]:
    """The first arrival time in [``start``, ``end``) (None if none) and the bytes that came
    in that window; ``arrivals`` sorted by time."""
    times = [t for t, _ in arrivals]
    lo, hi = bisect.bisect_left(times, start), bisect.bisect_left(times, end)
    return (times[lo] if lo < hi else None), sum(n for _, n in arrivals[lo:hi])
