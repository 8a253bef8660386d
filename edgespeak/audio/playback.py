"""Playback of utterances on the PCM device: what the writer thread does with each command.

Per utterance (:class:`Utterance`, reported as :class:`Playback`): optional lead-in silence; a
raised-cosine fade-in over the first ``fade_ms`` and fade-out over the last ``fade_ms`` (the
last ``fade_ms`` of samples are held back until it is known whether more come); software gain
(utterance gain times sink volume). Between utterances :class:`Player` keeps the device running
on silence for ``keep_open_s`` (amplifiers, HDMI and Bluetooth sinks stay awake), then drains
it; the handle itself stays open.

Keep-open silence never delays speech. It is topped up a period at a time only when there is
room, so the writer thread never blocks in it and sees a new command at once. When the next
utterance's first frame is ready, what is left of the previous utterance (a chime, a fade-out)
is let play, and the silence queued behind it is taken back (``snd_pcm_drop``: pyalsaaudio
cannot rewind; dropping silence cannot click, and the utterance starts from zero, faded in):
the new frames restart the device at once, so it stops for well under a period, and the speech
is heard one buffer sooner than behind the silence. When the speech's audio is known to be at
hand before its first frame reaches the writer (a phrase-cache hit), :meth:`Player.prime` takes
the silence back then, off the path to the first sound; if no utterance begins within a
period, the silence resumes.

An utterance with a start instant (``Utterance.start_at``) is placed instead, by
:class:`~edgespeak.audio.placing.Placer`: the silence before its first frame, or the frames of
it already past, are counted from the device's delay; keep-open silence is taken back only when
it would make it late.

Preemption: pyalsaaudio cannot rewind the ALSA buffer, and ``snd_pcm_drop`` cuts the sound
mid-waveform (a click). So an abort with a fade appends a fade-out over the next ``fade_ms`` of
not-yet-written samples behind what is already buffered: the sound stops within one period
(checked between period writes) + ``buffer_ms`` + ``fade_ms``.

:class:`Player` runs on the writer thread only; an utterance's futures are settled on its
event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import alsaaudio

from edgespeak.audio import dsp
from edgespeak.audio.device import PcmDevice
from edgespeak.audio.placing import Placer
from edgespeak.audio.utterance import Playback, Utterance, resolve, settle
from edgespeak.base.errors import AudioDeviceError
from edgespeak.base.pcm import FRAME_BYTES

__all__ = ["Playback", "Player", "Utterance", "resolve", "settle"]
log = logging.getLogger(__name__)
T = TypeVar("T")


class Player(Placer):
    """Plays utterances on ``device`` (writer thread only): begin, data, end, abort, and the
    keep-open silence between them (``keep_open_s`` seconds, then drained).

    ``volume``: the software sink volume, 0.0-1.0 linear, read for each chunk (set from any
    thread). ALSA errors fail the utterance being written (``Utterance.error``, an
    AudioDeviceError) and close the device; nothing here raises them.
    """

    def __init__(self, device: PcmDevice, keep_open_s: float) -> None:
        self.device = device
        self.volume = 1.0
        self._keep_open_s = keep_open_s
        self._running = False  # frames were written since the PCM was opened, drained or dropped
        self._current: Utterance | None = None  # begun, not yet ended or cut short
        self._ended: Utterance | None = None  # ended; done is settled once it has been played
        self._since_end = 0  # frames of silence written since _ended ended
        self._silence_left = 0  # keep-open frames still to write
        self._silence_run: int | None = None  # silence frames since the last utterance frame
        self._primed_until: float | None = None  # monotonic s: silence taken back for speech

    # ---- commands ------------------------------------------------------------------------
    def begin(self, utt: Utterance) -> None:
        """Start ``utt`` (cutting short one begun and never ended): open the device at its
        rate, write its lead-in (with a start instant, the silence before its first frame is
        written with that frame instead, the lead-in counted in it)."""
        self._primed_until = None
        if (previous := self._current) is not None:  # never ended: cut it short, settle it
            self._cut(previous, previous.held)
            self.finish(previous)
        if self._guard(utt, self._open, utt.playback.rate_hz) is None:
            return
        self._current = utt
        if utt.lead_in and utt.start_at is None:
            self._guard(utt, self._write, utt, bytes(utt.lead_in * FRAME_BYTES), True)

    def data(self, utt: Utterance, pcm: bytes, final: bool = False) -> None:
        """Write bytes of s16le mono PCM for ``utt``: gain, fade-in, the fade tail held back.
        With a start instant, its first frames are placed first (:meth:`_join`); ``final``:
        no more data comes, place what there is."""
        if utt.stopped or utt.error is not None:
            return
        if utt.odd or len(pcm) % FRAME_BYTES:
            pcm = utt.odd + pcm
            cut = len(pcm) - len(pcm) % FRAME_BYTES
            pcm, utt.odd = pcm[:cut], pcm[cut:]
        if utt.start_at is not None and not utt.placed:
            pcm = self._join(utt, pcm, final)
            if not pcm:
                return
        start = utt.received
        utt.received += len(pcm) // FRAME_BYTES
        envelope = utt.fade_in[start : utt.received] if start < utt.fade_frames else None
        pending = utt.held + dsp.shape(pcm, utt.gain * self.volume, envelope)
        if utt.aborted:
            self._cut(utt, pending)
            return
        keep = min(len(pending), utt.fade_frames * FRAME_BYTES)
        out, utt.held = pending[: len(pending) - keep], pending[len(pending) - keep :]
        written = self._guard(utt, self._write, utt, out)
        if written is not None and written < len(out):  # abort() came in between periods
            self._cut(utt, out[written:] + utt.held)

    def end(self, utt: Utterance) -> None:
        """Finish ``utt``: write its held tail faded out; it is settled once played."""
        if utt.early:  # fewer frames than its fade came before its start instant
            self.data(utt, b"", final=True)
        if utt.stopped or utt.error is not None:
            self.finish(utt)
            return
        if utt.aborted:
            self._cut(utt, utt.held)
            self.finish(utt)
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
            self.finish(utt)

    def abort(self, utt: Utterance) -> None:
        """Cut ``utt`` short (unless already over) and settle it."""
        if not utt.stopped and utt.error is None:
            self._cut(utt, utt.held)
        self.finish(utt)

    def prime(self) -> None:
        """Speech begins next, as soon as it can: when the device runs on keep-open silence
        written since the last utterance frame, let what is left of that utterance play and
        take the silence back now, not at the speech's first frame. The device then waits,
        prepared and stopped, for a period; with no utterance begun by then the keep-open
        silence resumes (:meth:`keep_open`). A device open and stopped (drained) is prepared
        now instead of by the first write. Nothing otherwise."""
        run = self._silence_run
        if self._current is None and not self._running and self.device.is_open:
            self._guard(None, self.device.prepare)
            return
        if self._current is not None or not self._running or not run:
            return
        if self._guard(None, self._drop_silence, run) is not None:
            self._silence_run = None  # the device stopped in between: no exact gap
            self._primed_until = time.monotonic() + self.device.period_frames / self.device.rate_hz

    # ---- between utterances ----------------------------------------------------------------
    def keep_open(self) -> float | None:
        """One step of idle work while the device runs and no utterance is writing: a period
        of keep-open silence when there is room for it (never blocking), or, once
        ``keep_open_s`` of it is written, drain the device. Settles the ended utterance once
        it has been played. Primed (:meth:`prime`) and stopped: waits out the period, then
        restarts the silence. Returns None when there is nothing to do (the device is
        stopped, or an utterance is writing), else the seconds the writer may wait for a
        command before the next step (0.0: at once)."""
        writing = self._current is not None and self._current.playback.first_frame_at is not None
        if writing:
            return None
        if not self._running:
            return self._primed_wait()
        if self._silence_left <= 0:
            if self.device.is_open:
                self._guard(None, self.device.drain)
            self._halted()
            return 0.0
        queued = self._guard(None, self.device.queued)
        if queued is None:  # failed: the device is closed
            return 0.0
        if self._ended is not None and self._since_end >= queued:  # it has been played
            self.settle_ended()
        frames = min(self.device.period_frames, self._silence_left)
        room = self.device.buffer_frames - queued
        if room < frames:  # a full buffer: wait until a period has played
            self.device.waiting()
            return max(frames - room, self.device.period_frames // 4) / self.device.rate_hz
        self._guard(None, self._silence, frames)
        self._silence_left -= frames
        return 0.0

    def _primed_wait(self) -> float | None:
        """Stopped: the seconds left of a prime's wait; once it is over, the keep-open silence
        restarts (0.0: the next step at once), or None when there is none left to play."""
        if self._primed_until is None:
            return None
        wait_s = self._primed_until - time.monotonic()
        if wait_s > 0:
            return wait_s
        self._primed_until = None
        if self._silence_left <= 0 or not self.device.is_open:
            return None
        frames = min(self.device.period_frames, self._silence_left)
        self._silence_run = 0
        self._guard(None, self._silence, frames)
        self._silence_left -= frames
        return 0.0

    def settle_if_stopped(self) -> None:
        """The device is not running: an ended utterance has been played, settle it."""
        if not self._running:
            self.settle_ended()

    def settle_ended(self) -> None:
        """Settle the ended utterance, if any (played, or followed by the next without a gap)."""
        if self._ended is not None:
            self.finish(self._ended)
            self._ended = None

    def finish(self, utt: Utterance) -> None:
        """``utt`` is over: settle its futures on its event loop."""
        if self._current is utt:
            self._current = None
        utt.loop.call_soon_threadsafe(settle, utt)

    def shutdown(self, closed: AudioDeviceError) -> None:
        """Close the device; an utterance begun and never ended fails with ``closed``."""
        self._close()
        if self._current is not None:
            self._current.error = self._current.error or closed
            self.finish(self._current)

    # ---- writing ---------------------------------------------------------------------------
    def _silence(self, frames: int) -> None:
        """Write ``frames`` frames of silence between utterances. Raises ALSAAudioError."""
        self._write(None, bytes(frames * FRAME_BYTES))
        if self._silence_run is not None:
            self._silence_run += frames
        self._since_end += frames

    def _take_back(self, utt: Utterance) -> None:
        """Before ``utt``'s first frame: when the device runs on silence written since the last
        utterance frame, let what is left of that utterance play, then drop the silence queued
        behind it. Sets ``utt``'s ``gap_frames`` to the silence played in between (None when
        the device had stopped). Raises alsaaudio.ALSAAudioError."""
        run = self._silence_run
        if self._running and run:
            run = self._drop_silence(run)
        utt.playback.gap_frames = run

    def _drop_silence(self, run: int) -> int:
        """The device runs on ``run`` frames of silence written since the last utterance frame:
        let what is left of that utterance play, then drop (and prepare) the device. Returns
        the frames of silence played in between. Raises alsaaudio.ALSAAudioError."""
        queued, added = self.device.play_out(behind=run)
        self._since_end += added
        self.device.drop()
        self._running = False
        self.settle_ended()
        return max(0, run + added - queued)

    def _cut(self, utt: Utterance, pending: bytes) -> None:
        """Cut ``utt`` short: fade out over its next ``fade_frames`` not-yet-written samples
        (padded by holding the last value), or ``snd_pcm_drop`` without ``fade_on_abort``."""
        self._stopped(utt)
        utt.held = b""
        utt.playback.interrupted = True
        if utt.error is not None or not self.device.is_open:
            return
        if not utt.fade_on_abort:
            self._guard(utt, self.device.drop)
            self._halted()
        elif utt.fade_frames and (pending or utt.last):
            material = dsp.hold(pending, utt.fade_frames, utt.last)
            self._guard(utt, self._write, utt, dsp.shape(material, 1.0, utt.fade_out), False, False)

    def _stopped(self, utt: Utterance) -> None:
        """``utt`` is over for the writer: start the keep-open countdown."""
        utt.stopped = True
        if self._current is utt:
            self._current = None
        self._silence_left = round(self._keep_open_s * self.device.rate_hz)

    def _write(
        self, utt: Utterance | None, data: bytes, lead_in: bool = False, abortable: bool = True
    ) -> int:
        """Hand ``data`` to ALSA a period at a time; returns the bytes written, fewer when
        ``abortable`` and ``utt`` got aborted in between. A stopped device starts on the first
        frames written, so it is handed up to a buffer at once: it starts with all of that
        queued, not one period. After an underrun (recovered by the device) the same frames are
        written again. Raises alsaaudio.ALSAAudioError."""
        if not self.device.is_open:
            raise alsaaudio.ALSAAudioError("device is not open")
        view = memoryview(data)
        done = 0
        while done < len(view):
            if abortable and utt is not None and utt.aborted:
                break
            first_at: float | None = None  # the first frame's hand-over, in this pass
            if utt is not None and utt.playback.first_frame_at is None:
                if utt.start_at is None:  # else placed already (_due)
                    self._take_back(utt)
                first_at = utt.playback.first_frame_at = time.monotonic()
            frames = self.device.period_frames if self._running else self.device.buffer_frames
            piece = view[done : done + frames * FRAME_BYTES]
            underruns = self.device.underruns
            try:
                written = self.device.write(piece)
            finally:  # an underrun counts for the utterance even when its recovery fails
                if utt is not None:
                    utt.playback.underruns += self.device.underruns - underruns
            if utt is not None and first_at is not None:  # told once written: the loop
                # woken up before would have held the GIL the write needed
                utt.loop.call_soon_threadsafe(resolve, utt.first_frame, first_at)
            if written == 0:  # interrupted or underran: nothing taken, try again
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
                if not lead_in and utt.start_at is not None and utt.playback.frames == written:
                    self._started(utt)
        return done

    def _open(self, rate_hz: int) -> bool:
        """The device open at ``rate_hz``: kept when it is, else (re)opened, and then it has
        stopped in between (:meth:`_halted`). Raises alsaaudio.ALSAAudioError."""
        if not (self.device.is_open and self.device.rate_hz == rate_hz):
            self._close()
            self.device.open(rate_hz)
        return True

    def _guard(self, utt: Utterance | None, fn: Callable[..., T], *args: object) -> T | None:
        """``fn(*args)``; an ALSA error fails ``utt`` (if any), closes the PCM, returns None."""
        try:
            return fn(*args)
        except alsaaudio.ALSAAudioError as exc:
            log.error("ALSA device %r failed: %s", self.device.name, exc)
            if utt is not None:
                utt.error = AudioDeviceError(f"ALSA device {self.device.name!r}: {exc}")
            self._close()
            return None

    def _halted(self) -> None:
        """The PCM stopped (drained, dropped or closed): what it played is over."""
        self._running = False
        self._silence_left = 0
        self._silence_run = None
        self._primed_until = None
        self.settle_ended()

    def _close(self) -> None:
        self.device.close()
        self._halted()
