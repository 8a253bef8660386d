"""The ALSA device: one pyalsaaudio playback PCM (s16le mono) at one sample rate, and a mixer.

:class:`PcmDevice` opens the PCM at a rate with the sink's period and buffer, reopens it when the
rate changes, writes a period at a time, recovers underruns, waits for what is queued to play
out, reports its delay, and drains, drops or closes it. It is used by the writer thread only.
Every call into the PCM goes through one path that records when the call began, so
:meth:`PcmDevice.stalled_s` (read from any thread: the daemon's watchdog check) sees a writer
stuck in any of them: open, write, the pre-roll after an underrun, delay, drain, drop, close.
(pyalsaaudio 0.11 keeps the GIL through ``snd_pcm_open``, ``snd_pcm_drop`` and
``snd_pcm_close``, seen with a drop blocked on a full FIFO: a device stuck there freezes the
event loop as well, which stops the watchdog pings the other way. Drops go through
:mod:`edgespeak.audio.libasound` without the GIL when the PCM's handle is known.)

:class:`Mixer` is the optional ALSA simple mixer control the sink volume is set on instead of
scaling samples.
"""

from __future__ import annotations

import errno
import functools
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import alsaaudio

from edgespeak.audio.libasound import pcm_delay, pcm_drop, pcm_handle, pcm_prepare
from edgespeak.base.pcm import FRAME_BYTES

log = logging.getLogger(__name__)
T = TypeVar("T")
POLL_S = 0.001  # how often the pointer is read while waiting for it to move, s


class PcmDevice:
    """The playback PCM ``name`` (an ALSA PCM name, e.g. ``"default"``, ``"hw:1"``).

    ``period_ms``: the ALSA period (ms); ``periods``: periods in the ALSA buffer (at least 2).
    Closed until :meth:`open`. ALSA errors are raised as ``alsaaudio.ALSAAudioError``.
    """

    def __init__(self, name: str, period_ms: float, periods: int) -> None:
        self.name = name
        self._period_ms = period_ms
        self._periods = periods
        self._pcm: alsaaudio.PCM | None = None
        self._handle: int | None = None  # the PCM's snd_pcm_t * (libasound calls), if known
        self.rate_hz = 0  # the open PCM's sample rate (Hz), 0 when closed
        self.period_frames = 0  # as granted by ALSA
        self.buffer_frames = 0
        self.underruns = 0  # all underruns met, each recovered
        self._blocked_since: float | None = None  # monotonic s the current PCM call began
        self._waiting_since: float | None = None  # monotonic s a wait for room began

    @property
    def is_open(self) -> bool:
        return self._pcm is not None

    def stalled_s(self) -> float:
        """Seconds spent so far inside the current call into the PCM, or waiting for room in
        a full buffer since :meth:`waiting` (0.0 when neither).

        A healthy write returns, and room comes, within a period; a wedged driver or a device
        that stopped consuming keeps growing this. Thread-safe (attribute reads)."""
        starts = [t for t in (self._blocked_since, self._waiting_since) if t is not None]
        return max(0.0, time.monotonic() - min(starts)) if starts else 0.0

    def waiting(self) -> None:
        """The writer waits for room in a full buffer without blocking in a write: until a
        write takes frames (or the PCM is drained, dropped or closed), :meth:`stalled_s`
        counts the wait as it counts a blocking write."""
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()

    def _call(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)``, a call into the PCM that may block: the one recorded path."""
        self._blocked_since = time.monotonic()
        try:
            return fn(*args)
        finally:
            self._blocked_since = None

    def _require(self) -> alsaaudio.PCM:
        if self._pcm is None:
            raise alsaaudio.ALSAAudioError("device is not open")
        return self._pcm

    def open(self, rate_hz: int) -> None:
        """Open the PCM at ``rate_hz`` Hz; kept as it is when already open at that rate,
        closed and reopened at another. Raises alsaaudio.ALSAAudioError."""
        if self._pcm is not None and self.rate_hz == rate_hz:
            return
        self.close()
        period = max(32, round(rate_hz * self._period_ms / 1000))
        pcm = self._call(
            functools.partial(
                alsaaudio.PCM,
                alsaaudio.PCM_PLAYBACK,
                device=self.name,
                channels=1,
                rate=rate_hz,
                format=alsaaudio.PCM_FORMAT_S16_LE,
                periodsize=period,
                periods=self._periods,
            )
        )
        self._pcm = pcm
        self._handle = pcm_handle(pcm, rate_hz)
        if self._handle is None:
            log.warning(
                "ALSA %r: snd_pcm_delay is not reachable through this pyalsaaudio; start "
                "instants use the buffer pointer (may miss what the device buffers beyond it), "
                "and drops keep the GIL",
                self.name,
            )
        info = pcm.info()
        self.rate_hz = rate_hz
        self.period_frames = int(info.get("period_size", period))
        self.buffer_frames = int(info.get("buffer_size", period * self._periods))
        log.debug(
            "opened ALSA %r at %d Hz, period %d frames, buffer %d frames",
            self.name,
            rate_hz,
            self.period_frames,
            self.buffer_frames,
        )

    def write(self, piece: bytes | memoryview) -> int:
        """Hand ``piece`` (bytes of s16le mono PCM, whole frames, at most one period, or one
        buffer while the device is stopped) to ALSA, blocking while the buffer is full.
        Returns the frames taken, 0 when nothing was: the call was interrupted, or the PCM
        underran (counted in :attr:`underruns`, logged, and recovered by :meth:`_preroll`);
        write the rest again.

        pyalsaaudio 0.11 returns ``-EPIPE`` having already prepared the PCM again.
        Raises alsaaudio.ALSAAudioError (also when the PCM is not open)."""
        pcm = self._require()
        written = int(self._call(pcm.write, piece))
        if written > 0:
            self._waiting_since = None
        if written == -errno.EPIPE:
            self.underruns += 1
            log.warning("ALSA underrun on %r (%d so far)", self.name, self.underruns)
            self._preroll()
        return max(written, 0)

    def _preroll(self) -> None:
        """After an underrun: restart the device on ``buffer - period`` frames of silence.

        The PCM restarts on the first frames written after the xrun (alsa-lib's default start
        threshold; pyalsaaudio 0.11 cannot change it), so a source delivering just in time
        would restart it on one period and underrun again every period — measured: one 1 s
        stall became 275 underruns. The silence refills the buffer: one gap of ``buffer_ms``,
        then the slack is back. Raises alsaaudio.ALSAAudioError.
        """
        pcm = self._require()
        silence = bytes(self.period_frames * FRAME_BYTES)
        left = self.buffer_frames - self.period_frames
        while left > 0:
            piece = silence[: min(left, self.period_frames) * FRAME_BYTES]
            written = int(self._call(pcm.write, piece))
            if written > 0:
                left -= written

    def queued(self) -> int:
        """Frames written and not yet played: the buffer less what ``snd_pcm_avail`` says is
        free (0 after an underrun, which ``avail`` reports as an error code). Does not block;
        pyalsaaudio keeps the GIL through it (a status call). Raises alsaaudio.ALSAAudioError
        when the PCM is not open."""
        avail = int(self._require().avail())
        if avail < 0:  # -EPIPE: underran, nothing left to play
            return 0
        return max(0, self.buffer_frames - avail)

    def delay(self) -> int:
        """Frames a frame written now waits before it is heard: ``snd_pcm_delay`` (what is
        queued in the buffer and beyond it: a sound server's buffer, the driver's FIFO), or
        :meth:`queued` when it cannot be called (see :mod:`edgespeak.audio.libasound`). 0 when
        the PCM is stopped or underran. Raises alsaaudio.ALSAAudioError (also when the PCM is
        not open)."""
        self._require()
        if self._handle is None:
            return self.queued()
        return self._call(pcm_delay, self._handle)

    def play_out(self, behind: int) -> tuple[int, int]:
        """Wait until everything queued but its last ``behind`` frames has been played,
        writing silence behind it as room appears so the device never runs dry. Returns the
        frames queued then and the frames of silence written. A device that plays nothing for
        twice its buffer is waited for no longer.

        Many devices move their pointer a period at a time (the PulseAudio plugin does): the
        queue read is then up to a period more than what is left, and exact at the moment the
        pointer moves. So the queue is read every ``POLL_S`` until the pointer moves (within a
        period), then what is left is slept: late by at most ``POLL_S`` and the scheduler.
        Raises alsaaudio.ALSAAudioError."""
        period, rate = self.period_frames, self.rate_hz
        deadline = time.monotonic() + 2 * self.buffer_frames / rate
        silence = bytes(period * FRAME_BYTES)
        last, added = -1, 0  # frames queued after the previous read (and top-up); written
        while True:
            queued, now = self.queued(), time.monotonic()
            left = queued - behind - added  # frames still to play before the last ``behind``
            if left <= 0 or now > deadline:
                return queued, added
            moved = 0 <= queued < last  # since the read POLL_S ago: ``left`` is exact
            if self.buffer_frames - queued >= period:
                underruns = self.underruns
                written = self.write(silence)
                if self.underruns > underruns:  # ran dry: all was played, then the pre-roll
                    queued = self.queued()
                    return queued, added + queued
                added, queued = added + written, queued + written
            if moved:
                time.sleep(left / rate)
                return max(0, queued - round((time.monotonic() - now) * rate)), added
            last = queued
            time.sleep(POLL_S)

    def drain(self) -> None:
        """Block until everything written has been played; the PCM stops (stays open).
        Raises alsaaudio.ALSAAudioError."""
        pcm = self._require()
        self._waiting_since = None
        self._call(pcm.drain)

    def drop(self) -> None:
        """Stop at once, discarding what is buffered (a click unless it was silence; stays
        open), and prepare it again: the next write restarts it. Without the GIL when the
        handle is known (:func:`~edgespeak.audio.libasound.pcm_drop`), so the event loop runs
        on meanwhile. Raises alsaaudio.ALSAAudioError."""
        pcm = self._require()
        self._waiting_since = None
        if self._handle is None:
            self._call(pcm.drop)  # pyalsaaudio's write() prepares it again
        else:
            self._call(pcm_drop, self._handle)

    def prepare(self) -> None:
        """A stopped PCM (drained) prepared now, without the GIL, so that the next write
        starts it at once; nothing when it is not stopped or its handle is unknown (then the
        write prepares it). Raises alsaaudio.ALSAAudioError."""
        self._require()
        if self._handle is not None:
            self._call(pcm_prepare, self._handle)

    def close(self) -> None:
        """Close the PCM if open (alsa-lib drains it first). Never raises: an error closing is
        logged at DEBUG, the handle is gone either way."""
        if self._pcm is None:
            return
        pcm, self._pcm, self.rate_hz, self._handle = self._pcm, None, 0, None
        self._waiting_since = None
        try:
            self._call(pcm.close)
        except alsaaudio.ALSAAudioError as exc:
            log.debug("closing ALSA device failed: %s", exc)


class Mixer:
    """The ALSA simple mixer control ``control`` (e.g. ``"PCM"``, ``"Master"``) on the mixer
    device ``device``, or none (``control`` None). When the control is missing or fails, a
    warning is logged and it is gone for good: the caller scales samples instead."""

    def __init__(self, control: str | None, device: str) -> None:
        self._mixer: alsaaudio.Mixer | None = None
        if control is None:
            return
        try:
            self._mixer = alsaaudio.Mixer(control, device=device)
        except alsaaudio.ALSAAudioError as exc:
            log.warning(
                "ALSA mixer control %r on %r is not available (%s); using software volume",
                control,
                device,
                exc,
            )

    def set(self, volume: float) -> bool:
        """Set the control to ``volume`` (0.0-1.0) as its percentage; returns False when there
        is no control (never was, or this call failed: logged)."""
        if self._mixer is None:
            return False
        try:
            self._mixer.setvolume(round(volume * 100))
            return True
        except alsaaudio.ALSAAudioError as exc:
            log.warning("ALSA mixer failed (%s); using software volume", exc)
            self._mixer = None
            return False
