"""Writing one phrase into the cache: PCM streamed into a temporary file, then committed.

The temporary file ``<dir>/.<key16>.<rnd>.tmp`` starts with a placeholder WAV header;
:meth:`CacheWriter.commit` completes the header, fsyncs the file and hands it to the store,
which renames it onto ``<key>.wav`` inside the index transaction that records it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from edgespeak.base.pcm import FRAME_BYTES, FrameCarry, wav_header
from edgespeak.sources.cache.entry import Entry
from edgespeak.sources.cache.key import normalise_text

if TYPE_CHECKING:
    from edgespeak.sources.cache.store import PhraseCache

log = logging.getLogger("edgespeak.sources.cache")

_MAX_DATA_BYTES = 0xFFFF_FFFF - 36  # a RIFF size is 32 bits


class CacheWriter:
    """Streams one phrase's PCM into a temporary file; :meth:`commit` stores it as an entry.

    Get one from :meth:`PhraseCache.writer`. Not thread-safe: one owner writes, then calls
    exactly one of :meth:`commit` or :meth:`discard` (calling :meth:`discard` again, or after
    :meth:`commit`, is harmless). Any failure raises :class:`OSError` only, and leaves no file.
    Every method does blocking disk I/O: call them off the event loop.
    """

    def __init__(
        self, cache: PhraseCache, key: str, rate_hz: int, *, text: str, voice: str | None
    ) -> None:
        """Creates the temporary file; raises OSError if it cannot."""
        self._cache = cache
        self.key = key
        self.rate_hz = rate_hz
        self._text = normalise_text(text)
        self._voice = voice
        fd, tmp = tempfile.mkstemp(dir=cache.dir, prefix=f".{key[:16]}.", suffix=".tmp")
        self._tmp = Path(tmp)
        try:
            os.fchmod(fd, 0o644)  # readable by a CLI or aplay run by another user
            self._file: BinaryIO | None = open(fd, "wb")
        except OSError:
            os.close(fd)
            self._tmp.unlink(missing_ok=True)
            raise
        self._sha = hashlib.sha256()
        self._data_bytes = 0
        self._carry = FrameCarry()  # half a sample split across write() calls
        try:
            self._file.write(wav_header(rate_hz, data_bytes=0))
        except OSError:
            self.discard()
            raise

    @property
    def frames(self) -> int:
        """Frames written so far."""
        return self._data_bytes // FRAME_BYTES

    def write(self, pcm: bytes) -> None:
        """Append ``pcm``, bytes of s16le mono PCM at ``rate_hz`` Hz (a sample may be split
        across calls). Raises OSError (disk full, I/O error, writer already finished, phrase
        over the 4 GiB WAV limit); the writer is then discarded."""
        file = self._file
        if file is None:
            raise OSError(errno.EBADF, "phrase cache writer already finished")
        if not pcm:
            return
        data = self._carry.whole(pcm)
        whole = len(data)
        try:
            if self._data_bytes + whole > _MAX_DATA_BYTES:
                raise OSError(errno.EFBIG, "phrase too long for a WAV file")
            if whole:
                view = memoryview(data)[:whole]
                file.write(view)
                self._sha.update(view)
        except OSError:
            self.discard()
            raise
        self._data_bytes += whole

    def commit(self) -> Entry | None:
        """Complete the WAV, fsync it and store it as entry ``key``.

        Returns the stored entry (pinned if its key is in the pin set); the existing entry if
        another writer stored ``key`` first (this audio is then dropped); None when nothing is
        stored: no audio was written, or the phrase alone is larger than ``max_bytes`` minus the
        pinned entries (logged). A trailing half sample is dropped. Entries over ``max_bytes``
        are evicted, least recently used first. Raises OSError (disk full, I/O error, index
        error or busy for more than 5 s, writer already finished); no file or row is left.
        """
        file = self._file
        if file is None:
            raise OSError(errno.EBADF, "phrase cache writer already finished")
        if self._carry.pending:
            log.debug("phrase cache %s: dropping a trailing half sample", self.key[:12])
        if self._data_bytes == 0:
            self.discard()
            return None
        frames = self._data_bytes // FRAME_BYTES
        try:
            file.seek(0)
            file.write(wav_header(self.rate_hz, data_bytes=frames * FRAME_BYTES))
            file.flush()
            os.fsync(file.fileno())
            file.close()
            self._file = None
            return self._cache._store(
                self.key,
                self._tmp,
                text=self._text,
                voice=self._voice,
                rate_hz=self.rate_hz,
                frames=frames,
                sha256=self._sha.hexdigest(),
            )
        finally:
            self.discard()

    def discard(self) -> None:
        """Drop the temporary file. Never raises."""
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()
        with contextlib.suppress(OSError):
            self._tmp.unlink(missing_ok=True)
