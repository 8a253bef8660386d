"""The node's state as Home Assistant sees it, and the volume kept across restarts.

:class:`NodeState` follows the announcement events and renders the retained JSON published on
``<prefix>/<node_id>/state``::

    {"state": "idle"|"speaking", "volume": 0-100, "queue": int, "cache_entries": int|null,
     "provider_reachable": bool|null, "last_ttfa_ms": float|null, "last_error": str|null}

The volume itself is :class:`~edgespeak.speaking.volume.VolumeStore`'s.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from edgespeak.base.events import TERMINAL, Event

log = logging.getLogger(__name__)
MAX_ERROR_CHARS = 255  # a Home Assistant sensor state holds at most 255 characters


@dataclass
class NodeState:
    """What is shown: ``volume`` 0.0-1.0 (shown in percent), ``queue`` announcements waiting,
    ``cache_entries`` phrases cached (None: no cache), ``provider_reachable`` (None: not tried
    yet), ``last_ttfa_ms`` of the last announcement played, ``last_error`` of the last failure."""

    volume: float = 1.0
    queue: int = 0
    cache_entries: int | None = None
    provider_reachable: bool | None = None
    last_ttfa_ms: float | None = None
    last_error: str | None = None
    playing_id: str | None = None

    @property
    def speaking(self) -> bool:
        """Playing, or about to: one waiting starts at once, so ``queue > 0`` counts (no
        flicker to idle between two queued announcements)."""
        return self.playing_id is not None or self.queue > 0

    def observe(self, event: Event) -> None:
        """Take in one announcement event (``playing`` starts speaking; the end of the one
        playing stops it; a failure of any announcement becomes ``last_error``)."""
        if event.state == "playing":
            self.playing_id = event.id
            self.last_ttfa_ms = event.ttfa_ms
        elif event.state in TERMINAL and event.id == self.playing_id:
            self.playing_id = None
        if event.state == "failed" and event.error:
            self.last_error = event.error

    def to_json(self) -> bytes:
        """The retained state payload (UTF-8 JSON, keys as in the module docstring)."""
        error = self.last_error
        if error is not None and len(error) > MAX_ERROR_CHARS:
            error = error[: MAX_ERROR_CHARS - 1] + "…"
        body = {
            "state": "speaking" if self.speaking else "idle",
            "volume": round(self.volume * 100),
            "queue": self.queue,
            "cache_entries": self.cache_entries,
            "provider_reachable": self.provider_reachable,
            "last_ttfa_ms": self.last_ttfa_ms,
            "last_error": error,
        }
        return json.dumps(body, separators=(",", ":")).encode()
