"""Playing a group announcement's PCM so that its first frame is heard at an instant.

The audio layer does the placing (``AlsaSink.begin(..., start_at=)``: the silence the device's
delay calls for, frames already past skipped, ``Playback.start_offset_s`` measured from the
delay at the first write); this module feeds it the group's audio as it arrives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from edgespeak.audio.alsa import AlsaSink
from edgespeak.audio.playback import Playback, Utterance
from edgespeak.base.errors import TtsProtocolError


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
    time is already past when the first ones are written are skipped, so a late node joins in
    step, never late. ``on_begin`` is called with the utterance once begun. Drains, then
    returns what the writer did; aborts the sound (fade) on any failure or cancellation.

    Raises TtsProtocolError when ``pcm`` yields nothing, AudioDeviceError from the sink, and
    whatever ``pcm`` raises.
    """
    utt: Utterance | None = None
    try:
        async for chunk in pcm:
            if utt is None:
                utt = await sink.begin(rate_hz, lead_in_ms=lead_in_ms, gain=gain, start_at=start_at)
                if on_begin is not None:
                    on_begin(utt)
            await sink.write(utt, chunk)
        if utt is None:
            raise TtsProtocolError("the group's audio ended before its first frame")
        return await sink.end(utt)
    except BaseException:
        if utt is not None:
            await sink.abort(utt)
        raise


def start_offset_s(playback: Playback, start_at: float | None) -> float | None:
    """Heard start minus planned start (s), as the audio layer measured it; None without a
    start instant."""
    return playback.start_offset_s if start_at is not None else None
