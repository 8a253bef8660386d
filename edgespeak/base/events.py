"""Announcement events published on ``<prefix>/<node_id>/event`` (one JSON object per change)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Final, Literal, get_args

TerminalState = Literal["finished", "interrupted", "expired", "failed"]
State = Literal["received", "playing", TerminalState]
TERMINAL: Final[tuple[TerminalState, ...]] = get_args(TerminalState)
"""The states that end an announcement: each announcement's last event is in exactly one of
them (``finished`` spoken; ``interrupted`` cut off or stopped; ``expired`` dropped unspoken
after its ``ttl_s``; ``failed`` refused or broken). Test ``event.state in TERMINAL``."""
Source = Literal["stream", "cache", "fallback", "sound", "url", "relay"]

# Wall clock and monotonic clock read together once: event times are the monotonic clock
# mapped onto the wall clock, so they keep their order and spacing when NTP steps the clock
# (a Pi without a real-time clock boots in 1970 and jumps when the network comes up).
_WALL0, _MONO0 = time.time(), time.monotonic()


def wall_time(monotonic_s: float) -> float:
    """Unix seconds for a ``time.monotonic()`` reading, rounded to milliseconds."""
    return round(_WALL0 + (monotonic_s - _MONO0), 3)


@dataclass(frozen=True)
class Event:
    """One state change of one announcement.

    ``at``: unix seconds (millisecond resolution) derived from the monotonic clock.
    ``ttfa_ms``: milliseconds from MQTT receipt to the first frame handed to ALSA.
    ``duration_s``: seconds of audio played. ``underruns``: ALSA xruns while it played.
    ``error``: a human-readable reason (failed, expired, interrupted).
    ``reason``: why the offline fallback spoke instead of the provider (source fallback only).
    ``chime_gap_ms``: milliseconds of silence between the chime and the speech (chimed only).
    ``warning``: something that went wrong without stopping it (an unknown chime, skipped).
    ``voice``/``engine``: which voice spoke and what made the audio (finished only): the
    fallback's voice and ``espeak-ng`` or ``piper``; for a stream or a cached phrase the
    provider (``fish``, ``cartesia``) and the voice asked of it (absent: its default), or the
    Piper voice that rendered a pinned phrase the provider could not.
    ``host``: the host (and port) of a media URL played (source url), never its path or query.
    ``group``: a group announcement's ``finished``/``failed`` (docs/protocols.md §16.6):
    ``key``, ``leader``, ``start_offset_ms`` (heard start minus planned start, ms),
    ``clock_error_ms``, ``synced`` (False: played at once, unsynchronised; ``reason`` then
    says why).
    """

    id: str
    state: State
    source: Source | None = None
    ttfa_ms: float | None = None
    duration_s: float | None = None
    underruns: int | None = None
    error: str | None = None
    reason: str | None = None
    chime_gap_ms: float | None = None
    warning: str | None = None
    voice: str | None = None
    engine: str | None = None
    host: str | None = None
    group: dict[str, object] | None = None
    at: float = field(default_factory=lambda: wall_time(time.monotonic()))

    def to_json(self) -> bytes:
        """The event as compact UTF-8 JSON, without keys whose value is None."""
        body = {k: v for k, v in asdict(self).items() if v is not None}
        return json.dumps(body, separators=(",", ":")).encode()
