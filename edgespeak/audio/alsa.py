"""The ALSA output: one long-lived writer thread owning the PCM handle (pyalsaaudio).

The event loop hands it chunks of s16le mono PCM through a bounded queue; the thread writes
them with blocking ``snd_pcm_writei`` so ALSA paces playback, and reports the moment the first
frame of an utterance was handed to ALSA (for TTFA). The PCM is opened on first use, kept open
across utterances at the same sample rate, and reopened only when the rate changes or after a
device error. A missing or failing device raises :class:`AudioDeviceError`; the daemon goes on.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import alsaaudio

from edgespeak.errors import AudioDeviceError

log = logging.getLogger(__name__)
T = TypeVar("T")
FRAME_BYTES = 2  # s16le mono


@dataclass
class Playback:
    """What the writer did for one utterance.

    ``first_frame_at``: ``time.monotonic()`` seconds when the first frame was handed to ALSA.
    ``frames``: frames written. ``rate_hz``: the PCM's sample rate.
    """

    rate_hz: int
    first_frame_at: float | None = None
    frames: int = 0

    @property
    def duration_s(self) -> float:
        """Seconds of audio written."""
        return self.frames / self.rate_hz


class Utterance:
    """One utterance in the writer: its futures (first frame handed to ALSA, done) and state."""

    def __init__(self, loop: asyncio.AbstractEventLoop, rate_hz: int) -> None:
        self.loop = loop
        self.playback = Playback(rate_hz)
        self.first_frame: asyncio.Future[float] = loop.create_future()
        self.done: asyncio.Future[Playback] = loop.create_future()
        self.error: AudioDeviceError | None = None
        self.aborted = False


class AlsaSink:
    """Plays bytes of s16le mono PCM at a given rate on ALSA ``device``.

    ``period_ms``/``periods`` set the ALSA period (milliseconds) and buffer (periods);
    ``queue_chunks`` bounds the chunks waiting for the writer (backpressure on the producer).
    """

    def __init__(
        self, device: str = "default", period_ms: int = 20, periods: int = 4, queue_chunks: int = 64
    ) -> None:
        self.device = device
        self._period_ms = period_ms
        self._periods = periods
        # (command, utterance, data): "begin" | "data" | "drain" | "drop" | "quit"
        self._queue: queue.Queue[tuple[str, Utterance | None, bytes]] = queue.Queue()
        self._slots = asyncio.Semaphore(queue_chunks)
        self._pcm: alsaaudio.PCM | None = None
        self._pcm_rate = 0
        self._thread = threading.Thread(target=self._run, name="alsa-writer", daemon=True)
        self._thread.start()

    async def begin(self, rate_hz: int) -> Utterance:
        """Start an utterance at ``rate_hz``; returns its handle for :meth:`write`/:meth:`end`."""
        utt = Utterance(asyncio.get_running_loop(), rate_hz)
        self._queue.put(("begin", utt, b""))
        return utt

    async def write(self, utt: Utterance, pcm: bytes) -> None:
        """Queue bytes of s16le mono PCM; waits while the queue is full.

        Raises AudioDeviceError once the writer has failed on this utterance.
        """
        if utt.error is not None:
            raise utt.error
        if pcm:
            await self._slots.acquire()
            self._queue.put(("data", utt, pcm))

    async def end(self, utt: Utterance) -> Playback:
        """Drain: wait until everything queued has been played. Raises AudioDeviceError."""
        self._queue.put(("drain", utt, b""))
        return await utt.done

    async def abort(self, utt: Utterance) -> Playback:
        """Drop what is still queued for ``utt`` and stop its sound now (``snd_pcm_drop``).

        Returns what was played; never raises (a failed utterance is aborted the same way).
        """
        utt.aborted = True
        self._queue.put(("drop", utt, b""))
        try:
            return await utt.done
        except AudioDeviceError:
            return utt.playback

    def close(self) -> None:
        """Stop the writer thread and close the PCM (blocks until the thread is gone)."""
        self._queue.put(("quit", None, b""))
        self._thread.join(timeout=5)

    # ---- writer thread ------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            kind, utt, pcm = self._queue.get()
            if utt is None:  # quit
                self._close_pcm()
                return
            if kind == "data":
                utt.loop.call_soon_threadsafe(self._slots.release)
                if utt.error is None and not utt.aborted:
                    self._guard(utt, self._write, utt, pcm)
            elif kind == "begin":
                self._guard(utt, self._open, utt.playback.rate_hz)
            elif kind == "drain":
                if utt.error is None:
                    self._guard(utt, self._drain)
                self._finish(utt)
            elif kind == "drop":
                if self._pcm is not None:
                    self._guard(utt, self._pcm.drop)
                self._finish(utt)

    def _guard(self, utt: Utterance, fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except alsaaudio.ALSAAudioError as exc:
            log.error("ALSA device %r failed: %s", self.device, exc)
            utt.error = AudioDeviceError(f"ALSA device {self.device!r}: {exc}")
            self._close_pcm()

    def _open(self, rate_hz: int) -> None:
        if self._pcm is not None and self._pcm_rate == rate_hz:
            return
        self._close_pcm()
        period = max(32, rate_hz * self._period_ms // 1000)
        self._pcm = alsaaudio.PCM(
            alsaaudio.PCM_PLAYBACK,
            device=self.device,
            channels=1,
            rate=rate_hz,
            format=alsaaudio.PCM_FORMAT_S16_LE,
            periodsize=period,
            periods=self._periods,
        )
        self._pcm_rate = rate_hz
        log.debug("opened ALSA %r at %d Hz, period %d frames", self.device, rate_hz, period)

    def _write(self, utt: Utterance, pcm: bytes) -> None:
        if self._pcm is None:
            raise alsaaudio.ALSAAudioError("device is not open")
        if utt.playback.first_frame_at is None:
            now = time.monotonic()
            utt.playback.first_frame_at = now
            utt.loop.call_soon_threadsafe(_resolve, utt.first_frame, now)
        view = memoryview(pcm)
        while view:
            written = self._pcm.write(view)
            if written <= 0:  # interrupted: nothing taken, try again
                continue
            utt.playback.frames += written
            view = view[written * FRAME_BYTES :]

    def _drain(self) -> None:
        if self._pcm is not None:
            self._pcm.drain()

    def _finish(self, utt: Utterance) -> None:
        utt.loop.call_soon_threadsafe(_settle, utt)

    def _close_pcm(self) -> None:
        if self._pcm is not None:
            try:
                self._pcm.close()
            except alsaaudio.ALSAAudioError as exc:
                log.debug("closing ALSA device failed: %s", exc)
            self._pcm = None
            self._pcm_rate = 0


def _resolve(fut: asyncio.Future[T], value: T) -> None:
    if not fut.done():
        fut.set_result(value)


def _settle(utt: Utterance) -> None:
    """End of an utterance (on the event loop): settle both of its futures, always, so no
    waiter hangs. An aborted utterance ends without error."""
    error = None if utt.aborted else utt.error
    if not utt.first_frame.done():
        utt.first_frame.set_exception(error or AudioDeviceError("no frame was played"))
        utt.first_frame.exception()  # retrieved: a waiter may be gone, that is not a bug
    if utt.done.done():
        return
    if error is not None:
        utt.done.set_exception(error)
    else:
        utt.done.set_result(utt.playback)
