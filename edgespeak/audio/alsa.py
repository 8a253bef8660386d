"""The ALSA output, :class:`AlsaSink`: plays utterances of s16le mono PCM on an ALSA device.

The event loop hands it chunks through a bounded queue to one long-lived writer thread
(:mod:`edgespeak.audio.writer`) owning the PCM handle (:mod:`edgespeak.audio.device`, through
pyalsaaudio), which writes them in period-sized pieces so ALSA paces playback, and reports the
moment the first frame of an utterance was handed to ALSA (for TTFA). The PCM is opened on first
use, kept open across utterances at the same sample rate, and reopened only when the rate
changes or after a device error. A missing or failing device raises :class:`AudioDeviceError`;
the daemon goes on.

Playback quality, per utterance (:mod:`edgespeak.audio.playback`): optional lead-in silence;
fade-in and fade-out over ``fade_ms``; software gain (utterance gain times sink volume) or an
ALSA mixer control; interruption with a fade instead of a click; underruns counted and
recovered. Between utterances the device is kept running on silence for ``keep_open_s``, then
drained; the handle itself stays open. That silence never delays speech: it is taken back when
the next utterance's first frame is ready, which is heard within a period of it.

An utterance may instead be heard from a given instant (``begin(start_at=...)``, for rooms
playing in step): the silence before it is counted from the device's delay, or the part of it
already past is skipped (:mod:`edgespeak.audio.placing`).
"""

from __future__ import annotations

import asyncio
import math
import time

from edgespeak.audio.device import Mixer, PcmDevice
from edgespeak.audio.playback import Playback, Player, Utterance
from edgespeak.audio.writer import Writer
from edgespeak.base.errors import AudioDeviceError

MAX_FADE_MS = 20.0
PRIME_WAIT_S = 0.001  # how long prime() waits for the writer to take it (s)


class AlsaSink:
    """Plays bytes of s16le mono PCM at a given rate on ALSA ``device``.

    ``period_ms``: the ALSA period (ms); ``buffer_ms``: the ALSA buffer (ms, rounded to a whole
    number of periods, at least 2). ``queue_chunks`` bounds the chunks waiting for the writer
    (backpressure on the producer). ``lead_in_ms``: default silence before each utterance (ms).
    ``fade_ms``: fade-in/fade-out length (0-20 ms). ``keep_open_s``: seconds of silence frames
    written after the last utterance before the PCM is drained (what of it is still queued
    when the next utterance's first frame is ready is dropped). ``volume``: 0.0-1.0, linear
    (``20·log10(volume)`` dB). ``mixer``: an ALSA simple mixer control on ``mixer_device``
    (e.g. ``"PCM"``, ``"Master"``) that :meth:`set_volume` sets instead of scaling samples; when
    it is missing a warning is logged and software volume is used. Raises ValueError for
    values out of range.
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
        self._lead_in_ms = lead_in_ms
        self._fade_ms = fade_ms
        self._pcm = PcmDevice(device, period_ms, max(2, round(buffer_ms / period_ms)))
        self._player = Player(self._pcm, keep_open_s)
        self._mixer = Mixer(mixer, mixer_device)
        self.set_volume(volume)
        self._closed = False
        self._period_s = period_ms / 1000
        self._primed_at = -math.inf  # time.monotonic() of the last prime handed to the writer
        self._writer = Writer(self._player, queue_chunks)

    @property
    def underruns(self) -> int:
        """All underruns met on the device, keep-open silence included, each recovered."""
        return self._pcm.underruns

    async def begin(
        self,
        rate_hz: int,
        *,
        lead_in_ms: float | None = None,
        gain: float = 1.0,
        start_at: float | None = None,
    ) -> Utterance:
        """Start an utterance at ``rate_hz`` Hz; returns its handle for :meth:`write`/:meth:`end`.

        ``lead_in_ms``: silence written before its first sample (default: the sink's), exactly
        ``round(rate_hz * lead_in_ms / 1000)`` frames. ``gain``: 0.0-1.0, linear, times the
        sink volume.

        ``start_at``: a ``time.monotonic()`` instant (s) at which its first sample must be heard
        at the device's output, or None (as soon as it can). When its first samples are written,
        the writer reads the device's delay (``snd_pcm_delay``: frames queued, keep-open silence
        included, and buffered beyond ALSA) and writes exactly the silence that puts the first
        sample at the instant; the lead-in is part of that silence, not added to it (an instant
        too close for the whole lead-in shortens it). Queued keep-open silence that would make
        it late is taken back first. An instant already past skips the samples that are past:
        sample ``k`` is heard at ``start_at + k / rate_hz`` whatever comes first, never later
        (``Playback.skipped_frames``, ``Playback.start_offset_s``). A chime begun with the
        instant and the speech ended right behind it: the speech follows the chime. Samples
        that arrive late for their instant after the first (the producer falling behind)
        underrun and play late, as without one.

        Raises ValueError for values out of range, AudioDeviceError once closed.
        """
        if self._closed:
            raise AudioDeviceError(f"ALSA device {self.device!r}: the sink is closed")
        _check("rate_hz", rate_hz, 1, 1_000_000)
        lead_ms = self._lead_in_ms if lead_in_ms is None else lead_in_ms
        _check("lead_in_ms", lead_ms, 0, 10_000)
        _check("gain", gain, 0, 1)
        if start_at is not None and not math.isfinite(start_at):
            raise ValueError(f"start_at must be a time.monotonic() instant, got {start_at!r}")
        lead_in = round(rate_hz * lead_ms / 1000)
        fade = round(rate_hz * self._fade_ms / 1000)
        utt = Utterance(asyncio.get_running_loop(), rate_hz, lead_in, fade, gain, start_at)
        self._writer.put("begin", utt)
        return utt

    def prime(self) -> None:
        """An utterance without a start instant begins next, its audio at hand (a cache hit):
        when the device plays keep-open silence, the writer takes it back now instead of when
        the utterance's first frame comes (:meth:`Player.prime`); when it has stopped
        (drained), it is prepared now. Either way the first frame is written to a prepared
        device at once. The silence resumes if no utterance begins within a period.
        A prime within a period of the previous one is already under way: not repeated (the
        writer would wake for nothing while the first sound is on its way). Waits up to
        :data:`PRIME_WAIT_S` for the writer thread to take the prime (:meth:`Writer.prime`).
        Thread-safe (a worker thread calls it); nothing once closed."""
        now = time.monotonic()
        if not self._closed and now - self._primed_at >= self._period_s:
            self._primed_at = now
            self._writer.prime(PRIME_WAIT_S)

    async def write(self, utt: Utterance, pcm: bytes) -> None:
        """Queue bytes of s16le mono PCM; waits while the queue is full. Ignored once aborted.

        Raises AudioDeviceError once the writer has failed on this utterance.
        """
        if utt.error is not None:
            raise utt.error
        if pcm and not utt.aborted:
            await self._writer.put_data(utt, pcm)

    async def end(self, utt: Utterance) -> Playback:
        """Fade out and finish ``utt``; returns once it has been played, or once the next
        utterance follows it without a gap. Raises AudioDeviceError."""
        return await self.end_nowait(utt)

    def end_nowait(self, utt: Utterance) -> asyncio.Future[Playback]:
        """Like :meth:`end`, without waiting: the end is queued at once, so an utterance
        begun right after follows ``utt`` without a gap. Returns ``utt``'s done future."""
        self._writer.put("end", utt)
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
        self._writer.put("abort", utt)
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
        if not self._mixer.set(volume):
            self._player.volume = volume

    async def wait_idle(self) -> None:
        """Return once everything queued has been played, the keep-open silence written and
        the PCM drained (or closed after a failure)."""
        await self._writer.wait_idle()

    def stalled_s(self) -> float:
        """Seconds the writer thread has been inside one blocking ALSA call (0.0 when it is
        not in one): open, write, pre-roll after an underrun, drain, drop or close; or waiting
        for room in a full buffer to top keep-open silence up. A healthy write returns, and
        room comes, within a period; a wedged driver or a device that stopped consuming keeps
        growing this (the daemon's watchdog checks it)."""
        return self._writer.stalled_s()

    def close(self) -> None:
        """Stop the writer thread and close the PCM (blocks until the thread is gone).

        What is queued is still played; keep-open silence is cut short.
        """
        self._closed = True
        self._writer.close()


def _check(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be within {low:g}..{high:g}, got {value!r}")
