"""The node's state as Home Assistant sees it, and the volume kept across restarts.

:class:`NodeState` follows the announcement events and renders the retained JSON published on
``<prefix>/<node_id>/state``::

    {"state": "idle"|"speaking", "volume": 0-100, "queue": int, "cache_entries": int|null,
     "provider_reachable": bool|null, "last_ttfa_ms": float|null, "last_error": str|null}

:class:`VolumeStore` keeps the volume set over MQTT in ``[daemon] state_dir``/``volume``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgespeak.events import Event

log = logging.getLogger(__name__)
MAX_ERROR_CHARS = 255  # a Home Assistant sensor state holds at most 255 characters
TERMINAL = ("finished", "interrupted", "expired", "failed")


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


def parse_volume(payload: bytes) -> float:
    """A ``volume/set`` payload (a number of percent, 0-100, e.g. ``65`` or ``"65.5"``) as
    0.0-1.0. Raises ValueError saying what is wrong."""
    text = payload.decode("utf-8", errors="replace").strip()
    try:
        percent = float(text)
    except ValueError:
        raise ValueError(f"volume must be a number of percent 0-100, got {text[:40]!r}") from None
    if not 0 <= percent <= 100:
        raise ValueError(f"volume must be within 0-100 %, got {percent:g}")
    return percent / 100


class VolumeStore:
    """The volume (0.0-1.0) in ``<state_dir>/volume``, written atomically (temp file, fsync,
    rename). Never raises: an unreadable or unwritable state dir is logged, once per kind."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "volume"
        self._warned = False

    def load(self) -> float | None:
        """The stored volume, or None when none was stored (or it is unreadable: logged)."""
        try:
            value = float(self.path.read_text().strip())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring the stored volume in %s: %s", self.path, exc)
            return None
        if not 0 <= value <= 1:
            log.warning("ignoring the stored volume %g in %s: not within 0-1", value, self.path)
            return None
        return value

    def save(self, volume: float) -> None:
        """Store ``volume`` (0.0-1.0)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".volume-")
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(f"{volume:.4f}\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            level = logging.DEBUG if self._warned else logging.WARNING
            log.log(level, "cannot keep the volume in %s (lost at restart): %s", self.path, exc)
            self._warned = True
