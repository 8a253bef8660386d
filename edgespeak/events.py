"""Announcement events published on ``<prefix>/<node_id>/event`` (one JSON object per change)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal

State = Literal["received", "playing", "finished", "failed"]
Source = Literal["stream", "cache", "fallback"]


@dataclass(frozen=True)
class Event:
    """One state change of one announcement.

    ``ttfa_ms``: milliseconds from MQTT receipt to the first frame handed to ALSA.
    ``duration_s``: seconds of audio played. ``error``: a human-readable reason (failed only).
    ``reason``: why the offline fallback spoke instead of the provider (source fallback only).
    """

    id: str
    state: State
    source: Source | None = None
    ttfa_ms: float | None = None
    duration_s: float | None = None
    error: str | None = None
    reason: str | None = None

    def to_json(self) -> bytes:
        """The event as compact UTF-8 JSON, without keys whose value is None."""
        body = {k: v for k, v in asdict(self).items() if v is not None}
        return json.dumps(body, separators=(",", ":")).encode()
