"""The one volume: set over MQTT, by Home Assistant's number entity (and soon the media
player), kept across restarts in ``[daemon] state_dir``/``volume``."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


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
