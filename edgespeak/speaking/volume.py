"""The one volume: set over MQTT, by Home Assistant's number entity and by its media player,
kept across restarts in ``[daemon] state_dir``/``volume``; the media player's mute beside it
in ``muted``. Setting a volume unmutes (so every inlet's ``volume/set`` is audible).

The values change at once; the files are written (and fsynced) by one thread of the store's
own, in order, so a volume set from the event loop never waits for the disk."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)


class VolumeStore:
    """The volume (0.0-1.0) in ``<state_dir>/volume`` and the mute flag in ``<state_dir>/muted``,
    written atomically (temp file, fsync, rename) by the store's writer thread, in the order
    set. Never raises: an unreadable or unwritable state dir is logged, once per kind.
    :meth:`close` (or :meth:`flush`) waits for what is still to be written.

    ``volume`` and ``muted`` are the values last loaded or saved (``volume`` None: none yet).
    Callbacks given to :meth:`watch` run after every :meth:`save` and :meth:`save_muted`.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "volume"
        self.muted_path = state_dir / "muted"
        self.volume: float | None = None
        self.muted = False
        self._warned = False
        self._watchers: list[Callable[[], None]] = []
        self._writer: ThreadPoolExecutor | None = None  # started by the first write
        self._last: Future[None] | None = None

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after each change of the volume or the mute flag."""
        self._watchers.append(callback)

    def load(self) -> float | None:
        """The stored volume, or None when none was stored (or it is unreadable: logged).
        Reads the mute flag too (:attr:`muted`)."""
        self.muted = self._load_muted()
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
        self.volume = value
        return value

    def save(self, volume: float) -> None:
        """Store ``volume`` (0.0-1.0); unmutes."""
        self.volume = volume
        self._write(self.path, f"{volume:.4f}\n")
        if self.muted:
            self.muted = False
            self._write(self.muted_path, "0\n")
        self._changed()

    def save_muted(self, muted: bool) -> None:
        """Store the mute flag."""
        self.muted = muted
        self._write(self.muted_path, f"{int(muted)}\n")
        self._changed()

    def _load_muted(self) -> bool:
        try:
            return self.muted_path.read_text().strip() == "1"
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("ignoring the stored mute flag in %s: %s", self.muted_path, exc)
            return False

    def _changed(self) -> None:
        for callback in self._watchers:
            callback()

    def flush(self) -> None:
        """Block until every value set so far is on disk (or its failure logged)."""
        if self._last is not None:
            self._last.result()

    def close(self) -> None:
        """:meth:`flush`, then stop the writer thread (a later set starts it again)."""
        self.flush()
        if self._writer is not None:
            self._writer.shutdown()
            self._writer = None

    def _write(self, path: Path, text: str) -> None:
        """Have the writer thread store ``text`` in ``path``."""
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="edgespeak-volume")
        self._last = self._writer.submit(self._store, path, text)

    def _store(self, path: Path, text: str) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            level = logging.DEBUG if self._warned else logging.WARNING
            log.log(level, "cannot keep the %s in %s (lost at restart): %s", path.name, path, exc)
            self._warned = True
