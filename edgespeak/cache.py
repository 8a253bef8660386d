"""Phrase cache, first cut: complete streams stored as WAV files, keyed by content.

Key: sha256 over provider, endpoint, model, voice, format, sample rate and normalised text
(whitespace folded, case kept). Audio is stored as a standard PCM WAV (playable with
``aplay``) whatever came over the wire. Only streams that ended with ``finish`` reason ``stop``
and carried audio are stored, written to a temporary file and renamed into place. A cache
that cannot be written (read-only, disk full) only logs: speech never depends on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgespeak.audio.alsa import FRAME_BYTES
from edgespeak.errors import CacheError

log = logging.getLogger(__name__)
READ_FRAMES = 4096
WAV_HEADER_BYTES = 44


def cache_key(
    *,
    provider: str,
    endpoint: str,
    model: str,
    voice: str | None,
    format: str,
    sample_rate: int | None,
    text: str,
) -> str:
    """Hex sha256 identifying one phrase as one provider would speak it."""
    body = {
        "provider": provider,
        "endpoint": endpoint,
        "model": model,
        "voice": voice,
        "format": format,
        "sample_rate": sample_rate,
        "text": " ".join(text.split()),
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class CachedPhrase:
    """A stored phrase: ``path`` to a WAV of s16le mono PCM at ``rate_hz``, ``frames`` long."""

    path: Path
    rate_hz: int
    frames: int

    def chunks(self) -> Iterator[bytes]:
        """Yield its bytes of s16le mono PCM, ~4096 frames at a time.

        Raises CacheError if the file cannot be read (removed, truncated, disk error).
        """
        try:
            with wave.open(str(self.path), "rb") as wav:
                while data := wav.readframes(READ_FRAMES):
                    yield data
        except (OSError, EOFError, wave.Error) as exc:
            raise CacheError(f"cached phrase {self.path.name} unreadable: {exc}") from None


class CacheWriter:
    """Collects one stream's PCM into a temporary WAV; :meth:`commit` renames it into place."""

    def __init__(self, directory: Path, key: str, rate_hz: int) -> None:
        self._final = directory / f"{key}.wav"
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{key[:16]}.", suffix=".tmp")
        self._tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        self._wav = wave.open(self._file, "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(FRAME_BYTES)
        self._wav.setframerate(rate_hz)
        self.frames = 0

    def write(self, pcm: bytes) -> None:
        """Append bytes of s16le mono PCM. Raises OSError (disk full…)."""
        self._wav.writeframesraw(pcm)
        self.frames += len(pcm) // FRAME_BYTES

    def commit(self) -> None:
        """Finish the WAV header, fsync and rename into place. Empty streams are discarded."""
        if self.frames == 0:
            self.discard()
            return
        self._wav.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self._final)

    def discard(self) -> None:
        """Drop the partial file."""
        with contextlib.suppress(Exception):
            self._wav.close()
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self._tmp.unlink()


class PhraseCache:
    """The cache directory. Every method logs and degrades instead of raising."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.usable = True
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("phrase cache disabled: cannot create %s: %s", directory, exc)
            self.usable = False

    def get(self, key: str) -> CachedPhrase | None:
        """The stored phrase, or None. An unreadable or empty entry is deleted and missed."""
        path = self.dir / f"{key}.wav"
        if not self.usable or not path.exists():
            return None
        try:
            with wave.open(str(path), "rb") as wav:
                ok = wav.getnchannels() == 1 and wav.getsampwidth() == FRAME_BYTES
                phrase = CachedPhrase(path, wav.getframerate(), wav.getnframes())
            expected = phrase.frames * FRAME_BYTES
            if ok and phrase.frames > 0 and path.stat().st_size >= expected + WAV_HEADER_BYTES:
                return phrase
            reason = "empty or not s16 mono"
        except (OSError, EOFError, wave.Error) as exc:
            reason = str(exc)
        log.warning("dropping bad cache entry %s: %s", path.name, reason)
        with contextlib.suppress(OSError):
            path.unlink()
        return None

    def writer(self, key: str, rate_hz: int) -> CacheWriter | None:
        """A writer for ``key``, or None when the cache cannot be written."""
        if not self.usable:
            return None
        try:
            return CacheWriter(self.dir, key, rate_hz)
        except OSError as exc:
            log.warning("cannot write to phrase cache %s: %s", self.dir, exc)
            return None
