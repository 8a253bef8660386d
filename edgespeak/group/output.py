"""Playing a group announcement's PCM so that its first frame is heard at an instant.

The audio layer's ``start_at`` (issue 16, branch ``startat``: ``AlsaSink.begin(...,
start_at=)`` writes the silence the device's delay calls for, skips frames already past, and
reports ``Playback.start_offset_s``) is what makes the instant exact. Until it is merged,
:func:`_begin_at` and :func:`_skip_past` stand in for it, coarsely (the wait is on the event
loop, the device's own delay is not counted): they are the only place to replace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from edgespeak.audio.alsa import AlsaSink
from edgespeak.audio.playback import Playback, Utterance
from edgespeak.base.errors import TtsProtocolError
from edgespeak.base.pcm import FRAME_BYTES


async def play_at(
    sink: AlsaSink,
    pcm: AsyncIterator[bytes],
    rate_hz: int,
    start_at: float | None,
    *,
    lead_in_ms: int | None,
    gain: float,
    on_begin: Callable[[Utterance], None] | None = None,
) -> Playback:
    """Play ``pcm`` (bytes of s16le mono PCM at ``rate_hz`` Hz) on ``sink`` so that its first
    frame is heard at ``start_at`` (``time.monotonic()`` seconds; None: at once). Frames whose
    time is already past when they arrive are skipped, so a late node joins in step, never
    late. ``on_begin`` is called with the utterance once begun. Drains, then returns what the
    writer did; aborts the sound (fade) on any failure or cancellation.

    Raises TtsProtocolError when ``pcm`` yields nothing, AudioDeviceError from the sink, and
    whatever ``pcm`` raises.
    """
    utt: Utterance | None = None
    skip = 0  # frames still to drop: their time has passed
    try:
        async for chunk in pcm:
            if utt is None:
                skip = _frames_past(start_at, rate_hz)  # late already: join in step
                utt = await _begin_at(sink, rate_hz, start_at, lead_in_ms, gain)
                if on_begin is not None:
                    on_begin(utt)
            if skip:
                drop = min(skip, len(chunk) // FRAME_BYTES)
                chunk, skip = chunk[drop * FRAME_BYTES :], skip - drop
            await sink.write(utt, chunk)
        if utt is None:
            raise TtsProtocolError("the group's audio ended before its first frame")
        return await sink.end(utt)
    except BaseException:
        if utt is not None:
            await sink.abort(utt)
        raise


def start_offset_s(playback: Playback, start_at: float | None) -> float | None:
    """Heard start minus planned start (s): the audio layer's measure once it has one, else
    the stand-in's estimate (first frame handed to ALSA minus ``start_at``)."""
    measured = getattr(playback, "start_offset_s", None)
    if isinstance(measured, float):
        return measured
    if start_at is None or playback.first_frame_at is None:
        return None
    lead_in_s = playback.lead_in_frames / playback.rate_hz
    return playback.first_frame_at + lead_in_s - start_at


async def _begin_at(
    sink: AlsaSink, rate_hz: int, start_at: float | None, lead_in_ms: int | None, gain: float
) -> Utterance:
    """Stand-in for ``sink.begin(..., start_at=start_at)``: wait until the lead-in must begin,
    then begin (the sink's default lead-in is not counted: coarse)."""
    if start_at is not None:
        lead_s = (lead_in_ms or 0) / 1000
        await asyncio.sleep(max(0.0, start_at - lead_s - time.monotonic()))
    return await sink.begin(rate_hz, lead_in_ms=lead_in_ms, gain=gain)


def _frames_past(start_at: float | None, rate_hz: int) -> int:
    """Stand-in for the writer's skipping: frames of the utterance already past now."""
    if start_at is None:
        return 0
    return max(0, round((time.monotonic() - start_at) * rate_hz))
