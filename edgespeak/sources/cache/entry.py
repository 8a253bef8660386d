"""One stored phrase: its index row (:class:`Entry`), its verified audio (:class:`CachedPhrase`),
and the check of a ``<key>.wav`` file against its row (:func:`read_checked`)."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgespeak.base.pcm import FRAME_BYTES, WAV_HEADER_BYTES, wav_header


@dataclass(frozen=True)
class Entry:
    """One index row: a stored phrase.

    ``key``: 64 hex digits. ``text``: normalised text. ``voice``: voice id or None.
    ``rate_hz``: sample rate in Hz. ``frames``: PCM frames (= samples, mono). ``size_bytes``:
    size of the WAV file in bytes (44 + 2 * frames). ``sha256``: hex sha256 of the PCM bytes
    (the WAV data, header excluded). ``created``/``last_used``: unix seconds. ``hits``: times
    played from the cache. ``pinned``: never evicted.
    """

    key: str
    text: str
    voice: str | None
    rate_hz: int
    frames: int
    size_bytes: int
    sha256: str
    created: float
    last_used: float
    hits: int
    pinned: bool

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.frames / self.rate_hz


@dataclass(frozen=True)
class CachedPhrase:
    """A verified entry, loaded: ``pcm`` is bytes of s16le mono PCM at ``rate_hz`` Hz;
    ``created``: its row's ``created`` (unix seconds), which :meth:`PhraseCache.record_hit`
    matches so that a hit never counts for an entry stored again since."""

    key: str
    pcm: bytes
    rate_hz: int
    created: float = 0.0

    @property
    def frames(self) -> int:
        """Length in frames (= samples, mono)."""
        return len(self.pcm) // FRAME_BYTES

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.frames / self.rate_hz

    def chunks(self, frames_per_chunk: int = 4096) -> Iterator[bytes]:
        """Yield ``pcm`` in slices of ``frames_per_chunk`` frames (2 bytes each), the last one
        shorter. Raises ValueError if ``frames_per_chunk`` < 1."""
        if frames_per_chunk < 1:
            raise ValueError(f"frames_per_chunk must be >= 1, not {frames_per_chunk}")
        step = frames_per_chunk * FRAME_BYTES
        for start in range(0, len(self.pcm), step):
            yield self.pcm[start : start + step]


def read_checked(path: Path, entry: Entry) -> tuple[bytes, str | None]:
    """``(pcm, None)`` if the WAV file at ``path`` matches ``entry`` (length ``44 + 2 *
    frames`` bytes, mono 16-bit at the row's rate and frame count, canonical header, PCM
    sha256), else ``(b"", reason)``. Never raises."""
    expected = WAV_HEADER_BYTES + entry.frames * FRAME_BYTES
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size == 0:
                return b"", "zero-length file"
            if size != expected:
                return b"", f"file is {size} bytes, expected {expected}"
            header = file.read(WAV_HEADER_BYTES)
            pcm = file.read(expected - WAV_HEADER_BYTES)
    except FileNotFoundError:
        return b"", "file missing"
    except OSError as exc:
        return b"", f"cannot read file: {exc}"
    if len(header) + len(pcm) != expected:
        return b"", f"read {len(header) + len(pcm)} bytes, expected {expected}"
    return pcm, check_wav(header, pcm, entry)


def check_wav(header: bytes, pcm: bytes, entry: Entry) -> str | None:
    """Why ``header`` + ``pcm`` (lengths already checked) do not match ``entry``, or None.

    The header must be the canonical one for the row (mono, 16-bit, its rate and frames): one
    equal to it needs no parsing, another is parsed only to say what differs."""
    if header != wav_header(entry.rate_hz, data_bytes=entry.frames * FRAME_BYTES):
        return _header_problem(header, entry)
    if hashlib.sha256(pcm).hexdigest() != entry.sha256:
        return "PCM checksum mismatch"
    return None


def _header_problem(header: bytes, entry: Entry) -> str:
    """What differs between ``header`` and the canonical header of ``entry``."""
    try:
        with wave.open(io.BytesIO(header), "rb") as wav:
            params = wav.getparams()
    except (wave.Error, EOFError, struct.error, ValueError) as exc:
        return f"not a WAV file ({exc})"
    if params.nchannels != 1:
        return f"{params.nchannels} channels, expected mono"
    if params.sampwidth != FRAME_BYTES:
        return f"{8 * params.sampwidth}-bit samples, expected 16-bit"
    if params.framerate != entry.rate_hz:
        return f"rate {params.framerate} Hz, expected {entry.rate_hz} Hz"
    if params.nframes != entry.frames:
        return f"{params.nframes} frames, expected {entry.frames}"
    return "non-canonical WAV header"


def wav_path(directory: Path, key: str) -> Path:
    """Where entry ``key`` of the cache in ``directory`` is stored: ``<directory>/<key>.wav``."""
    return directory / f"{key}.wav"


def fsync_dir(directory: Path) -> None:
    """fsync ``directory`` (a file created or renamed in it survives a power cut). Raises
    OSError."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
