"""The ALSA output: one long-lived writer thread owning the PCM handle (pyalsaaudio).

The event loop hands it chunks of s16le mono PCM through a bounded queue; the thread writes
them with blocking ``snd_pcm_writei`` in period-sized pieces so ALSA paces playback, and
reports the moment the first frame of an utterance was handed to ALSA (for TTFA). The PCM is
opened on first use, kept open across utterances at the same sample rate, and reopened only when
the rate changes or after a device error. A missing or failing device raises
:class:`AudioDeviceError`; the daemon goes on.

Playback quality, per utterance: optional lead-in silence; a raised-cosine fade-in over the first
``fade_ms`` and fade-out over the last ``fade_ms`` (the writer holds back the last ``fade_ms`` of
samples until it knows whether more come); software gain (utterance gain times sink volume) or an
ALSA mixer control; interruption with a fade instead of a click; underruns counted and recovered.
Between utterances the device is kept running on silence for ``keep_open_s`` (amplifiers, HDMI
and Bluetooth sinks stay awake), then drained; the handle itself stays open.

Interruption: pyalsaaudio cannot rewind the ALSA buffer, and ``snd_pcm_drop`` cuts the sound
mid-waveform (a click). So :meth:`AlsaSink.abort` with ``fade=True`` appends a fade-out over the
next ``fade_ms`` of not-yet-written samples behind what is already buffered: the sound stops
within one period (the writer checks between period writes) + ``buffer_ms`` + ``fade_ms``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import alsaaudio

from edgespeak.audio import dsp
from edgespeak.base.errors import AudioDeviceError
from edgespeak.base.pcm import FRAME_BYTES

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_FADE_MS = 20.0
Kind = Literal["begin", "data", "end", "abort", "quit"]


@dataclass
class Playback:
    """What the writer did for one utterance.

    ``first_frame_at``: ``time.monotonic()`` seconds when its first frame (lead-in included)
    was handed to ALSA. ``frames``: frames of speech written (fades included, lead-in not).
    ``lead_in_frames``: frames of lead-in silence written. ``rate_hz``: the PCM's sample rate.
    ``underruns``: ALSA underruns (xruns) met while writing it, each recovered.
    ``interrupted``: :meth:`AlsaSink.abort` cut it short.
    ``gap_frames``: frames of keep-open silence the device played between the previous
    utterance's last frame and this one's first (its own lead-in not counted), or None when the
    device had stopped in between (drained, reopened) or nothing played before.
    """

    rate_hz: int
    first_frame_at: float | None = None
    frames: int = 0
    lead_in_frames: int = 0
    underruns: int = 0
    interrupted: bool = False
    gap_frames: int | None = None

    @property
    def duration_s(self) -> float:
        """Seconds of speech written (lead-in excluded)."""
        return self.frames / self.rate_hz


class Utterance:
    """One utterance in the writer: its futures (first frame handed to ALSA, done) and state.

    ``aborted`` is set on the event loop by :meth:`AlsaSink.abort` and read by the writer
    thread; every other mutable field belongs to the writer thread.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, rate_hz: int, lead_in: int, fade: int, gain: float
    ) -> None:
        self.loop = loop
        self.playback = Playback(rate_hz)
        self.first_frame: asyncio.Future[float] = loop.create_future()
        self.done: asyncio.Future[Playback] = loop.create_future()
        self.error: AudioDeviceError | None = None
        self.aborted = False
        self.fade_on_abort = True
        self.lead_in = lead_in  # frames
        self.gain = gain
        self.fade_in = dsp.fade_in(fade)
        self.fade_out = dsp.fade_out(fade)
        # writer thread only
        self.received = 0  # frames received: the position within the fade-in
        self.odd = b""  # a trailing half frame received, kept for the next chunk
        self.held = b""  # the last ``fade`` frames received (gain applied), not yet written
        self.last = 0  # the last sample value handed to ALSA
        self.stopped = False  # ended or cut short: nothing more is written

    @property
    def fade_frames(self) -> int:
        return len(self.fade_in)


class AlsaSink:
    """Plays bytes of s16le mono PCM at a given rate on ALSA ``device``.

    ``period_ms``: the ALSA period (ms); ``buffer_ms``: the ALSA buffer (ms, rounded to a whole
    number of periods, at least 2). ``queue_chunks`` bounds the chunks waiting for the writer
    (backpressure on the producer). ``lead_in_ms``: default silence before each utterance (ms).
    ``fade_ms``: fade-in/fade-out length (0-20 ms). ``keep_open_s``: seconds of silence frames
    written after the last utterance before the PCM is drained. ``volume``: 0.0-1.0, linear
    (``20·log10(volume)`` dB). ``mixer``: an ALSA simple mixer control on ``mixer_device``
    (e.g. ``"PCM"``, ``"Master"``) that :meth:`set_volume` sets instead of scaling samples; when
    it is missing a warning is logged and software volume is used.
    """

    def __init__(
        self,
        device: str = "default",
        *,
        period_ms: float = 20,
        buffer_ms: float = 80,
        queue_chunks: int = 64,
        lead_in_ms: float = 0,
        fade_ms: float = 8,
        keep_open_s: float = 0.0,
        volume: float = 1.0,
        mixer: str | None = None,
        mixer_device: str = "default",
    ) -> None:
        _check("period_ms", period_ms, 1, 1000)
        _check("buffer_ms", buffer_ms, period_ms, 10_000)
        _check("queue_chunks", queue_chunks, 1, 1_000_000)
        _check("lead_in_ms", lead_in_ms, 0, 10_000)
        _check("fade_ms", fade_ms, 0, MAX_FADE_MS)
        _check("keep_open_s", keep_open_s, 0, 86_400)
        self.device = device
        self._period_ms = period_ms
        self._periods = max(2, round(buffer_ms / period_ms))
        self._lead_in_ms = lead_in_ms
        self._fade_ms = fade_ms
        self._keep_open_s = keep_open_s
        self._queue: queue.Queue[tuple[Kind, Utterance | None, bytes]] = queue.Queue()
        self._slots = asyncio.Semaphore(queue_chunks)
        self._volume = 1.0  # software volume, read by the writer for each chunk
        self._mixer = _open_mixer(mixer, mixer_device)
        self.set_volume(volume)
        self.underruns = 0  # all underruns, keep-open silence included
        # idle tracking, shared with the writer under _lock
        self._lock = threading.Lock()
        self._idle = True
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._closed = False
        self._blocked_since: float | None = None  # monotonic s a blocking ALSA call began
        # writer thread only
        self._pcm: alsaaudio.PCM | None = None
        self._pcm_rate = 0
        self._period_frames = 0
        self._buffer_frames = 0
        self._running = False  # frames were written since the PCM was opened, drained or dropped
        self._current: Utterance | None = None  # begun, not yet ended or cut short
        self._ended: Utterance | None = None  # ended; done is settled once it has been played
        self._since_end = 0  # frames of silence written since _ended ended
        self._silence_left = 0  # keep-open frames still to write
        self._silence_run: int | None = None  # silence frames since the last utterance frame
        self._thread = threading.Thread(target=self._run, name="alsa-writer", daemon=True)
        self._thread.start()

    # ---- event loop side -----------------------------------------------------------------
    async def begin(
        self, rate_hz: int, *, lead_in_ms: float | None = None, gain: float = 1.0
    ) -> Utterance:
        """Start an utterance at ``rate_hz`` Hz; returns its handle for :meth:`write`/:meth:`end`.

        ``lead_in_ms``: silence written before its first sample (default: the sink's), exactly
        ``round(rate_hz * lead_in_ms / 1000)`` frames. ``gain``: 0.0-1.0, linear, times the
        sink volume. Raises ValueError for values out of range, AudioDeviceError once closed.
        """
        if self._closed:
            raise AudioDeviceError(f"ALSA device {self.device!r}: the sink is closed")
        _check("rate_hz", rate_hz, 1, 1_000_000)
        lead_ms = self._lead_in_ms if lead_in_ms is None else lead_in_ms
        _check("lead_in_ms", lead_ms, 0, 10_000)
        _check("gain", gain, 0, 1)
        lead_in = round(rate_hz * lead_ms / 1000)
        fade = round(rate_hz * self._fade_ms / 1000)
        utt = Utterance(asyncio.get_running_loop(), rate_hz, lead_in, fade, gain)
        self._put("begin", utt)
        return utt

    async def write(self, utt: Utterance, pcm: bytes) -> None:
        """Queue bytes of s16le mono PCM; waits while the queue is full. Ignored once aborted.

        Raises AudioDeviceError once the writer has failed on this utterance.
        """
        if utt.error is not None:
            raise utt.error
        if pcm and not utt.aborted:
            await self._slots.acquire()
            self._put("data", utt, pcm)

    async def end(self, utt: Utterance) -> Playback:
        """Fade out and finish ``utt``; returns once it has been played, or once the next
        utterance follows it without a gap. Raises AudioDeviceError."""
        return await self.end_nowait(utt)

    def end_nowait(self, utt: Utterance) -> asyncio.Future[Playback]:
        """Like :meth:`end`, without waiting: the end is queued at once, so an utterance
        begun right after follows ``utt`` without a gap. Returns ``utt``'s done future."""
        self._put("end", utt)
        return utt.done

    async def abort(self, utt: Utterance, fade: bool = True) -> Playback:
        """Stop ``utt`` now, dropping what is still queued for it; returns what was played.

        ``fade``: ramp its next ``fade_ms`` of samples down to zero behind what ALSA already
        buffers, no click; returns once that ramp is handed to ALSA, so the next utterance can
        begin right away. Without ``fade``: ``snd_pcm_drop``, silent at once but may click.
        Never raises (a failed utterance is aborted the same way); ``interrupted`` tells
        whether it was cut short.
        """
        if not utt.aborted:
            utt.fade_on_abort = fade
            utt.aborted = True
        self._put("abort", utt)
        try:
            return await utt.done
        except AudioDeviceError:
            return utt.playback

    def set_volume(self, volume: float) -> None:
        """Set the sink volume, 0.0-1.0 (software: linear amplitude; mixer: its percentage).

        Thread-safe; in software it applies from the next chunk the writer processes. A mixer
        that fails logs a warning and software volume takes over. Raises ValueError.
        """
        _check("volume", volume, 0, 1)
        if self._mixer is not None:
            try:
                self._mixer.setvolume(round(volume * 100))
                return
            except alsaaudio.ALSAAudioError as exc:
                log.warning("ALSA mixer failed (%s); using software volume", exc)
                self._mixer = None
        self._volume = volume

    async def wait_idle(self) -> None:
        """Return once everything queued has been played, the keep-open silence written and
        the PCM drained (or closed after a failure)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._idle:
                return
            self._idle_waiters.append(fut)
        await fut

    def stalled_s(self) -> float:
        """Seconds the writer thread has been inside one blocking ALSA call (0.0 when it is
        not in one). A healthy write returns within a period; a wedged driver or a device
        that stopped consuming keeps growing this (the daemon's watchdog checks it)."""
        since = self._blocked_since
        return 0.0 if since is None else max(0.0, time.monotonic() - since)

    def close(self) -> None:
        """Stop the writer thread and close the PCM (blocks until the thread is gone).

        What is queued is still played; keep-open silence is cut short.
        """
        self._closed = True
        self._put("quit", None)
        self._thread.join(timeout=5)

    def _put(self, kind: Kind, utt: Utterance | None, pcm: bytes = b"") -> None:
        with self._lock:
            self._idle = False
            self._queue.put((kind, utt, pcm))

    # ---- writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            kind, utt, pcm = self._next()
            if utt is None:  # quit
                self._shutdown()
                return
            if kind == "data":
                utt.loop.call_soon_threadsafe(self._slots.release)
                self._on_data(utt, pcm)
            elif kind == "begin":
                self._on_begin(utt)
            elif kind == "end":
                self._on_end(utt)
            elif kind == "abort":
                if not utt.stopped and utt.error is None:
                    self._cut(utt, utt.held)
                self._finish(utt)

    def _next(self) -> tuple[Kind, Utterance | None, bytes]:
        """The next command. Idle after an utterance: keep the device running on silence
        (period by period, so a new command is seen within a period), then drain it."""
        while self._current is None and self._running and self._queue.empty():
            if self._silence_left > 0:
                frames = min(self._period_frames, self._silence_left)
                self._guard(None, self._write, None, bytes(frames * FRAME_BYTES))
                self._silence_left -= frames
                if self._silence_run is not None:
                    self._silence_run += frames
                self._since_end += frames
                if self._since_end >= self._buffer_frames:  # the utterance has left the buffer
                    self._settle_ended()
            else:
                if self._pcm is not None:
                    self._blocked_since = time.monotonic()
                    self._guard(None, self._pcm.drain)
                    self._blocked_since = None
                self._halted()
        if not self._running:
            self._settle_ended()
        self._notify_idle()
        command = self._queue.get()
        self._settle_ended()  # whatever comes next follows it without a gap
        return command

    def _on_begin(self, utt: Utterance) -> None:
        if (previous := self._current) is not None:  # never ended: cut it short, settle it
            self._cut(previous, previous.held)
            self._finish(previous)
        self._silence_left = 0
        if self._guard(utt, self._open, utt.playback.rate_hz) is None:
            return
        self._current = utt
        utt.playback.gap_frames = self._silence_run
        if utt.lead_in:
            self._guard(utt, self._write, utt, bytes(utt.lead_in * FRAME_BYTES), True)

    def _on_data(self, utt: Utterance, pcm: bytes) -> None:
        if utt.stopped or utt.error is not None:
            return
        if utt.odd or len(pcm) % FRAME_BYTES:
            pcm = utt.odd + pcm
            cut = len(pcm) - len(pcm) % FRAME_BYTES
            pcm, utt.odd = pcm[:cut], pcm[cut:]
        start = utt.received
        utt.received += len(pcm) // FRAME_BYTES
        envelope = utt.fade_in[start : utt.received] if start < utt.fade_frames else None
        pending = utt.held + dsp.shape(pcm, utt.gain * self._volume, envelope)
        if utt.aborted:
            self._cut(utt, pending)
            return
        keep = min(len(pending), utt.fade_frames * FRAME_BYTES)
        out, utt.held = pending[: len(pending) - keep], pending[len(pending) - keep :]
        written = self._guard(utt, self._write, utt, out)
        if written is not None and written < len(out):  # abort() came in between periods
            self._cut(utt, out[written:] + utt.held)

    def _on_end(self, utt: Utterance) -> None:
        if utt.stopped or utt.error is not None:
            self._finish(utt)
            return
        if utt.aborted:
            self._cut(utt, utt.held)
            self._finish(utt)
            return
        tail, utt.held = utt.held, b""
        frames = len(tail) // FRAME_BYTES
        if frames:
            tail = dsp.shape(tail, 1.0, utt.fade_out[len(utt.fade_out) - frames :], at_end=True)
            self._guard(utt, self._write, utt, tail, False, False)
        self._stopped(utt)
        if self._running and utt.error is None:
            self._ended, self._since_end = utt, 0
        else:
            self._finish(utt)

    def _cut(self, utt: Utterance, pending: bytes) -> None:
        """Cut ``utt`` short: fade out over its next ``fade_frames`` not-yet-written samples
        (padded by holding the last value), or ``snd_pcm_drop`` without ``fade_on_abort``."""
        self._stopped(utt)
        utt.held = b""
        utt.playback.interrupted = True
        if utt.error is not None or self._pcm is None:
            return
        if not utt.fade_on_abort:
            self._guard(utt, self._pcm.drop)
            self._halted()
        elif utt.fade_frames and (pending or utt.last):
            material = dsp.hold(pending, utt.fade_frames, utt.last)
            self._guard(utt, self._write, utt, dsp.shape(material, 1.0, utt.fade_out), False, False)

    def _stopped(self, utt: Utterance) -> None:
        """``utt`` is over for the writer: start the keep-open countdown."""
        utt.stopped = True
        if self._current is utt:
            self._current = None
        self._silence_left = round(self._keep_open_s * self._pcm_rate)

    def _write(
        self, utt: Utterance | None, data: bytes, lead_in: bool = False, abortable: bool = True
    ) -> int:
        """Hand ``data`` to ALSA a period at a time; returns the bytes written, fewer when
        ``abortable`` and ``utt`` got aborted in between. Underruns are counted and the same
        frames written again: pyalsaaudio 0.11 returns ``-EPIPE`` having already prepared the
        PCM again, nothing of those frames taken."""
        if self._pcm is None:
            raise alsaaudio.ALSAAudioError("device is not open")
        view = memoryview(data)
        step = self._period_frames * FRAME_BYTES
        done = 0
        while done < len(view):
            if abortable and utt is not None and utt.aborted:
                break
            piece = view[done : done + step]
            if utt is not None and utt.playback.first_frame_at is None:
                now = time.monotonic()
                utt.playback.first_frame_at = now
                utt.loop.call_soon_threadsafe(_resolve, utt.first_frame, now)
            self._blocked_since = time.monotonic()
            try:
                written = self._pcm.write(piece)
            finally:
                self._blocked_since = None
            if written == -errno.EPIPE:
                self.underruns += 1
                if utt is not None:
                    utt.playback.underruns += 1
                log.warning("ALSA underrun on %r (%d so far)", self.device, self.underruns)
                self._preroll()
                continue
            if written <= 0:  # interrupted: nothing taken, try again
                continue
            self._running = True
            done += written * FRAME_BYTES
            if utt is not None:
                self._silence_run = 0
                if lead_in:
                    utt.playback.lead_in_frames += written
                else:
                    utt.playback.frames += written
                utt.last = dsp.last_sample(piece[: written * FRAME_BYTES])
        return done

    def _preroll(self) -> None:
        """After an underrun: restart the device on ``buffer - period`` frames of silence.

        The PCM restarts on the first frames written after the xrun (alsa-lib's default start
        threshold; pyalsaaudio 0.11 cannot change it), so a source delivering just in time
        would restart it on one period and underrun again every period — measured: one 1 s
        stall became 275 underruns. The silence refills the buffer: one gap of ``buffer_ms``,
        then the slack is back.
        """
        assert self._pcm is not None
        silence = bytes(self._period_frames * FRAME_BYTES)
        left = self._buffer_frames - self._period_frames
        while left > 0:
            written = self._pcm.write(silence[: min(left, self._period_frames) * FRAME_BYTES])
            if written > 0:
                left -= written

    def _open(self, rate_hz: int) -> bool:
        if self._pcm is not None and self._pcm_rate == rate_hz:
            return True
        self._close_pcm()
        period = max(32, round(rate_hz * self._period_ms / 1000))
        self._pcm = alsaaudio.PCM(
            alsaaudio.PCM_PLAYBACK,
            device=self.device,
            channels=1,
            rate=rate_hz,
            format=alsaaudio.PCM_FORMAT_S16_LE,
            periodsize=period,
            periods=self._periods,
        )
        info = self._pcm.info()
        self._pcm_rate = rate_hz
        self._period_frames = int(info.get("period_size", period))
        self._buffer_frames = int(info.get("buffer_size", period * self._periods))
        log.debug(
            "opened ALSA %r at %d Hz, period %d frames, buffer %d frames",
            self.device,
            rate_hz,
            self._period_frames,
            self._buffer_frames,
        )
        return True

    def _guard(self, utt: Utterance | None, fn: Callable[..., T], *args: object) -> T | None:
        """``fn(*args)``; an ALSA error fails ``utt`` (if any), closes the PCM, returns None."""
        try:
            return fn(*args)
        except alsaaudio.ALSAAudioError as exc:
            log.error("ALSA device %r failed: %s", self.device, exc)
            if utt is not None:
                utt.error = AudioDeviceError(f"ALSA device {self.device!r}: {exc}")
            self._close_pcm()
            return None

    def _halted(self) -> None:
        """The PCM stopped (drained, dropped or closed): what it played is over."""
        self._running = False
        self._silence_left = 0
        self._silence_run = None
        self._settle_ended()

    def _settle_ended(self) -> None:
        if self._ended is not None:
            self._finish(self._ended)
            self._ended = None

    def _finish(self, utt: Utterance) -> None:
        if self._current is utt:
            self._current = None
        utt.loop.call_soon_threadsafe(_settle, utt)

    def _close_pcm(self) -> None:
        if self._pcm is not None:
            pcm, self._pcm, self._pcm_rate = self._pcm, None, 0
            try:
                pcm.close()  # drains first
            except alsaaudio.ALSAAudioError as exc:
                log.debug("closing ALSA device failed: %s", exc)
        self._halted()

    def _shutdown(self) -> None:
        self._close_pcm()
        closed = AudioDeviceError(f"ALSA device {self.device!r}: the sink is closed")
        if self._current is not None:  # begun, never ended
            self._current.error = self._current.error or closed
            self._finish(self._current)
        while True:  # anything queued after close(): settle it, never leave a waiter hanging
            try:
                kind, utt, _ = self._queue.get_nowait()
            except queue.Empty:
                break
            if utt is not None:
                if kind == "data":
                    utt.loop.call_soon_threadsafe(self._slots.release)
                utt.error = utt.error or closed
                self._finish(utt)
        self._notify_idle(closing=True)

    def _notify_idle(self, closing: bool = False) -> None:
        """Nothing left to do (or closing): wake the :meth:`wait_idle` waiters."""
        with self._lock:
            if not (closing or self._queue.empty()):
                return
            self._idle = True
            waiters, self._idle_waiters = self._idle_waiters, []
        for fut in waiters:
            fut.get_loop().call_soon_threadsafe(_resolve, fut, None)


def _check(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be within {low:g}..{high:g}, got {value!r}")


def _open_mixer(control: str | None, device: str) -> alsaaudio.Mixer | None:
    if control is None:
        return None
    try:
        return alsaaudio.Mixer(control, device=device)
    except alsaaudio.ALSAAudioError as exc:
        log.warning(
            "ALSA mixer control %r on %r is not available (%s); using software volume",
            control,
            device,
            exc,
        )
        return None


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
