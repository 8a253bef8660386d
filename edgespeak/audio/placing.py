"""Starting an utterance at an instant: its first frame heard at ``Utterance.start_at``.

:class:`Placer` is the part of the writer thread's :class:`~edgespeak.audio.playback.Player`
that places such an utterance when its first frames are to be written. Its timeline is fixed:
frame ``k`` is heard at ``start_at + k / rate``. From the device's delay (``snd_pcm_delay``,
:meth:`~edgespeak.audio.device.PcmDevice.delay`: what is queued, keep-open silence included,
and what a sound server or the driver holds beyond it; 0 when the device is stopped, as it
starts on the write) it writes exactly the silence due before the first frame, or drops the
frames already past. The lead-in is part of that silence, not added to it: the instant wins.

- Device stopped or closed (opened by ``begin``): it is started on part of the silence, then
  the delay is read again and the rest of the silence adjusted, so the device's own start
  latency (a sound server's, measured 0.5-2 ms on PulseAudio) is absorbed. An instant already
  past starts it on half a period of silence, then drops the frames past by then.
- Device running on keep-open silence: the silence queued counts; when there is more of it
  than time left, it is taken back (what is left of the previous utterance plays, the silence
  is dropped) and the device restarts as above.
- Device still playing the previous utterance (a chime ended just before): its frames count;
  this one follows it, skipping what is past if it ends after the instant. So a chime begun at
  the instant with the speech queued behind it: the speech follows the chime.
- Whatever is left of the silence once at most a buffer of it remains is measured again, so a
  writer held up (or an underrun) while it was written is absorbed too.

The offset that remains is reported in ``Playback.start_offset_s``, read from the delay right
after the first frames of it are written. Frames that come late after the first (a producer
falling behind) underrun and play late, as without an instant.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from edgespeak.audio.device import PcmDevice
from edgespeak.audio.utterance import Utterance
from edgespeak.base.pcm import FRAME_BYTES

DELAY_READS = 3  # reads of the delay for an estimate, at most
DELAY_READ_S = 0.0005  # a read that took longer (s) is done again


class Placer:
    """Places utterances with a start instant on ``device`` (writer thread only). The
    :class:`~edgespeak.audio.playback.Player` supplies the device state and the writing."""

    device: PcmDevice
    _running: bool  # frames were written since the PCM was opened, drained or dropped
    _silence_run: int | None  # keep-open silence frames since the last utterance frame

    # ---- supplied by the Player ------------------------------------------------------------
    def _take_back(self, utt: Utterance) -> None:
        raise NotImplementedError

    def _write(
        self, utt: Utterance | None, data: bytes, lead_in: bool = False, abortable: bool = True
    ) -> int:
        raise NotImplementedError

    def _guard(self, utt: Utterance | None, fn: Callable[..., Any], *args: object) -> Any:
        raise NotImplementedError

    # ---- placing ---------------------------------------------------------------------------
    def _join(self, utt: Utterance, pcm: bytes, final: bool) -> bytes:
        """Frames of ``utt`` received before it was placed: gathered until there are more than
        its fade (so its first write has speech in it) or ``final``, then placed
        (:meth:`_place`). Returns the frames to write now (b"" when none yet). An utterance
        aborted before it was placed was never heard: nothing of it is written."""
        if utt.aborted:
            utt.early = b""
            return b""
        pcm = utt.early + pcm
        if not pcm or (not final and len(pcm) <= utt.fade_frames * FRAME_BYTES):
            utt.early = pcm
            return b""
        utt.early = b""
        return self._place(utt, pcm)

    def _place(self, utt: Utterance, pcm: bytes) -> bytes:
        """Put ``utt``'s frames in ``pcm`` (its next ones, whole frames) in step: write the
        silence due before them, or drop those already past. Returns the frames to write."""
        due: int | None = self._guard(utt, self._due, utt)
        if due is not None and (due > 0 or not self._running):
            # a stopped device with the instant past: start it on half a period of silence
            silence, past = (due, 0) if due > 0 else (self.device.period_frames // 2, due)
            due = self._guard(utt, self._lead, utt, silence, past)
        if due is None or utt.error is not None or utt.aborted:  # failed, or cut short
            return b""
        drop = min(len(pcm) // FRAME_BYTES, -due) if due < 0 else 0
        utt.playback.skipped_frames += drop
        utt.placed = drop * FRAME_BYTES < len(pcm)
        return pcm[drop * FRAME_BYTES :]

    def _due(self, utt: Utterance) -> int:
        """Frames of silence due before ``utt``'s next frame (:meth:`_ahead`); negative, the
        frames already past. When keep-open silence queued would make it late, that silence is
        taken back first (what is left of the previous utterance plays; it is not cut). Sets
        ``gap_frames``. Raises alsaaudio.ALSAAudioError."""
        frames = self._ahead(utt)
        if frames < 0 and self._running and self._silence_run:
            self._take_back(utt)
            return self._ahead(utt)
        utt.playback.gap_frames = self._silence_run if self._running else None
        return frames

    def _ahead(self, utt: Utterance, queued: int | None = None) -> int:
        """Frames between the next frame written and ``utt``'s next frame in its timeline:
        the instant less now less the device's delay (``queued`` if read already; 0 when
        stopped: it starts on the write). Raises alsaaudio.ALSAAudioError."""
        assert utt.start_at is not None
        if queued is None:
            queued = self.device.delay() if self._running else 0
        ahead = round((utt.start_at - time.monotonic()) * self.device.rate_hz)
        return ahead + utt.playback.skipped_frames - queued

    def _lead(self, utt: Utterance, silence: int, past: int = 0) -> int:
        """Write ``silence`` frames of silence before ``utt``'s next frame. Once the device
        runs and at most a buffer of it is left (a stopped device is started on part of it),
        what is left is measured again from the device's delay. Returns minus the frames of
        ``utt`` past by then (0: none); ``past`` when not measured (a device that reports no
        delay is not paced). Raises alsaaudio.ALSAAudioError."""
        left, checked = silence, False
        buffer, period = self.device.buffer_frames, self.device.period_frames
        while True:
            if not checked and self._running and left <= buffer:
                checked = True
                if (queued := self.device.delay()) > 0:
                    left = self._ahead(utt, queued)
                    past = min(left, 0)
            if left <= 0 or utt.aborted:
                return past
            if left > buffer:
                piece = left - buffer
            else:  # a stopped device starts on this write: keep some to check after
                piece = left if self._running else left - min(period, left // 2)
            written = self._write(utt, bytes(piece * FRAME_BYTES), True) // FRAME_BYTES
            left -= written
            if written < piece:  # aborted in between
                return 0

    def _started(self, utt: Utterance) -> None:
        """Right after ``utt``'s first frames were written: its ``start_offset_s`` from the
        device's delay now. The delay and the clock are read together: read again (up to
        :data:`DELAY_READS` times) when the thread was held up more than
        :data:`DELAY_READ_S` around them, which shifted the estimate by that much. Raises
        alsaaudio.ALSAAudioError."""
        assert utt.start_at is not None
        for _ in range(DELAY_READS):
            before = time.monotonic()
            queued, now = self.device.delay(), time.monotonic()
            if now - before <= DELAY_READ_S:
                break
        position = utt.playback.skipped_frames + utt.playback.frames  # of the next frame written
        heard = now + (queued - position) / self.device.rate_hz  # when its frame 0 is heard
        utt.playback.start_offset_s = heard - utt.start_at
