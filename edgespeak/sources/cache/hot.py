"""Phrases said lately, their files kept open, read again without blocking (issue 17).

A cache hit's lookup runs in a worker thread because the index (sqlite, which may wait for
a CLI's write) and the file may be on disk, and the event loop must not wait for a disk. That
hop costs two thread wake-ups on the way to the first sound: a lookup made on the loop (a
blocking one, as an experiment) was 0.1-0.6 ms quicker per kept-open hit of 3.2-3.8 ms on the
2-vCPU test machine, and this module 0.5-0.8 ms (alternating A/B runs, docs/performance.md).

A phrase said again (a doorbell's) has had its row read and its file checked moments or
hours ago. :class:`HotPhrases` keeps the last :data:`KEPT` of them: the row and an open file
descriptor. :meth:`HotPhrases.read` then reads the file on the loop with calls that cannot
wait for a disk: ``fstat`` on the descriptor (no path lookup), and ``preadv`` with
``RWF_NOWAIT``, which fails with ``EAGAIN`` (or reads short) unless every page is in the page
cache (preadv(2), Linux 4.14). The audio is checked against the row as on every read
(:func:`~edgespeak.sources.cache.entry.check_wav`: header and sha256). Anything else
(a file gone or replaced since: its link count is 0; pages evicted; a damaged file; a file
system without ``RWF_NOWAIT``) is not read here, and the caller looks the phrase up in a thread
as before, where a bad entry is dropped.

The descriptors are closed when their phrase leaves the :data:`KEPT` most recent, when a read
finds its file unlinked, and on :meth:`HotPhrases.close`; an unlinked file's disk space is
freed then, not before.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

from edgespeak.base.pcm import FRAME_BYTES, WAV_HEADER_BYTES
from edgespeak.sources.cache.entry import CachedPhrase, Entry, check_wav

log = logging.getLogger("edgespeak.sources.cache")
KEPT = 16  # phrases kept open, most recently read


class HotPhrases:
    """The last :data:`KEPT` phrases read and checked, each with its open file. Thread-safe:
    :meth:`keep` opens its file before taking the lock, so :meth:`read` (on the event loop)
    never waits for a disk."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: OrderedDict[str, tuple[int, Entry]] = OrderedDict()  # key -> (fd, row)
        self._nowait = hasattr(os, "RWF_NOWAIT")  # False once the file system refuses it

    def keep(self, entry: Entry, path: Path) -> None:
        """``entry``'s file at ``path`` was just read and checked: keep it open (this opens
        the file: call it where blocking is fine). Never raises (an error is logged at
        DEBUG: the phrase is only not kept)."""
        if not self._nowait:
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.debug("phrase cache %s: not kept open: %s", entry.key[:12], exc)
            return
        with self._lock:
            if not self._nowait:  # closed meanwhile
                os.close(fd)
                return
            old = self._open.pop(entry.key, None)
            self._open[entry.key] = (fd, entry)
            closing = [old[0]] if old is not None else []
            while len(self._open) > KEPT:
                closing.append(self._open.popitem(last=False)[1][0])
            for stale in closing:
                os.close(stale)

    def read(self, key: str) -> CachedPhrase | None:
        """Phrase ``key`` if it is kept and its file can be read and checked without waiting
        for a disk, else None (then read it in a thread: :meth:`PhraseCache.get`). Never
        raises, never blocks on I/O."""
        with self._lock:
            kept = self._open.get(key)
            if kept is None:
                return None
            self._open.move_to_end(key)
            fd, entry = kept
            data = self._read_nowait(key, fd, entry)
        if data is None:
            return None
        view = memoryview(data)
        header, pcm = bytes(view[:WAV_HEADER_BYTES]), bytes(view[WAV_HEADER_BYTES:])
        if check_wav(header, pcm, entry) is not None:  # the thread's read drops the entry
            self.forget(key)
            return None
        return CachedPhrase(key, pcm, entry.rate_hz, entry.created)

    def _read_nowait(self, key: str, fd: int, entry: Entry) -> bytearray | None:
        """The whole file at ``fd`` if it is still linked, as long as the row says, and all in
        the page cache; else None, forgetting a file gone or changed (lock held)."""
        size = WAV_HEADER_BYTES + entry.frames * FRAME_BYTES
        buf = bytearray(size)
        try:
            stat = os.fstat(fd)
            if stat.st_nlink == 0 or stat.st_size != size:  # removed, replaced or changed
                del self._open[key]
                os.close(fd)
                return None
            got = os.preadv(fd, [buf], 0, os.RWF_NOWAIT)
        except BlockingIOError:  # a page is not in the page cache
            return None
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # no RWF_NOWAIT on this system
                log.debug("phrase cache: reading without waiting is not possible: %s", exc)
                self._nowait = False
                self._close_all()
            else:  # the file's own trouble (EIO...): the thread's read meets it and reports it
                del self._open[key]
                os.close(fd)
            return None
        return buf if got == size else None

    def forget(self, key: str) -> None:
        """Stop keeping ``key`` open (nothing if it is not kept)."""
        with self._lock:
            kept = self._open.pop(key, None)
            if kept is not None:
                os.close(kept[0])

    def close(self) -> None:
        """Close every kept file; :meth:`keep` keeps none after it."""
        with self._lock:
            self._nowait = False
            self._close_all()

    def _close_all(self) -> None:
        while self._open:
            os.close(self._open.popitem()[1][0])
