"""One utterance in the writer: :class:`Utterance` (its parameters, futures and writer state) and
:class:`Playback` (what the writer did for it), and how its futures are settled.

An utterance may be given ``start_at``, a ``time.monotonic()`` instant at which its first frame
(the first sample written to it, not its lead-in) must be heard at the device's output; the
writer places it there (:meth:`edgespeak.audio.playback.Player.data`) and reports how well in
:attr:`Playback.start_offset_s`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TypeVar

from edgespeak.audio import dsp
from edgespeak.base.errors import AudioDeviceError

T = TypeVar("T")


@dataclass
class Playback:
    """What the writer did for one utterance.

    ``first_frame_at``: ``time.monotonic()`` seconds when its first frame (lead-in included)
    was handed to ALSA. ``frames``: frames of speech written (fades included, lead-in not).
    ``lead_in_frames``: frames of lead-in silence written; with a start instant, the silence
    written before its first frame to put that frame at the instant (the lead-in is counted in
    it, not added to it). ``rate_hz``: the PCM's sample rate.
    ``underruns``: ALSA underruns (xruns) met while writing it, each recovered.
    ``interrupted``: the sink's ``abort`` cut it short.
    ``gap_frames``: frames of keep-open silence the device played between the previous
    utterance's last frame and this one's first (its own lead-in not counted), or None when the
    device had stopped in between (drained, reopened) or nothing played before.
    ``skipped_frames``: with a start instant already past when its first frame could be
    written, the frames at its start that were not played (dropped, never written) so that the
    rest is heard in step: frame ``k`` at ``start_at + k / rate_hz``. It joins late in its own
    timeline, never late in time; the fade-in applies to the first frame played.
    ``start_offset_s``: with a start instant, when its first frame is heard (estimated from the
    device's delay right after the first write, extrapolated to frame 0 when frames were
    skipped) less the instant, seconds: positive is late. None without a start instant or when
    nothing was written.
    """

    rate_hz: int
    first_frame_at: float | None = None
    frames: int = 0
    lead_in_frames: int = 0
    underruns: int = 0
    interrupted: bool = False
    gap_frames: int | None = None
    skipped_frames: int = 0
    start_offset_s: float | None = None

    @property
    def duration_s(self) -> float:
        """Seconds of speech written (lead-in excluded)."""
        return self.frames / self.rate_hz


class Utterance:
    """One utterance in the writer: its futures (first frame handed to ALSA, done) and state.

    ``lead_in``, ``fade``: frames at ``rate_hz`` Hz; ``gain``: 0.0-1.0, linear. ``start_at``: a
    ``time.monotonic()`` instant at which its first frame must be heard, or None (as soon as
    possible, behind its lead-in). ``aborted`` is set on the event loop by the sink's ``abort``
    and read by the writer thread; every other mutable field belongs to the writer thread.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        rate_hz: int,
        lead_in: int,
        fade: int,
        gain: float,
        start_at: float | None = None,
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
        self.start_at = start_at
        self.fade_in = dsp.fade_in(fade)
        self.fade_out = dsp.fade_out(fade)
        # writer thread only
        self.received = 0  # frames received and kept (not skipped): the position in the fade-in
        self.odd = b""  # a trailing half frame received, kept for the next chunk
        self.held = b""  # the last ``fade`` frames received (gain applied), not yet written
        self.last = 0  # the last sample value handed to ALSA
        self.stopped = False  # ended or cut short: nothing more is written
        self.placed = False  # with start_at: its timeline is fixed on the device
        self.early = b""  # with start_at: frames received, too few yet to be placed

    @property
    def fade_frames(self) -> int:
        return len(self.fade_in)


def resolve(fut: asyncio.Future[T], value: T) -> None:
    """Set ``fut``'s result unless it is done already (on its event loop)."""
    if not fut.done():
        fut.set_result(value)


def settle(utt: Utterance) -> None:
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
