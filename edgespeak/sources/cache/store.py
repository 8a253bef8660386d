"""The phrase cache itself: :class:`PhraseCache` looks up, stores, pins, lists and removes
entries of the cache directory (layout, integrity and crash safety: see
:mod:`edgespeak.sources.cache`).

Every change of a ``.wav`` file (rename in, eviction, removal, dropping a bad entry) happens
inside the index write transaction that records it. A row is what makes an entry exist:
:meth:`PhraseCache.get` never plays a file without a row, and checks the file against the row
on every read; a bad entry is dropped (row and file), logged at WARNING, and missed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from types import TracebackType

from edgespeak.base.pcm import FRAME_BYTES, WAV_HEADER_BYTES
from edgespeak.sources.cache.bounds import evict, fits_beside_pins
from edgespeak.sources.cache.entry import CachedPhrase, Entry, fsync_dir, read_checked, wav_path
from edgespeak.sources.cache.hot import HotPhrases
from edgespeak.sources.cache.index import (
    COLUMNS,
    NEXT_SEQ,
    IndexUnavailable,
    as_os_error,
    entry_from_row,
    not_writable,
    open_index,
    record_hit,
    transaction,
)
from edgespeak.sources.cache.key import KEY_RE
from edgespeak.sources.cache.reconcile import reconcile
from edgespeak.sources.cache.writer import CacheWriter

log = logging.getLogger("edgespeak.sources.cache")


class PhraseCache:
    """The phrase cache in directory ``dir`` (see :mod:`edgespeak.sources.cache`).

    ``max_bytes``: bound on the entries' total file size in bytes (index excluded), None =
    unbounded. ``usable``: False when the directory or its index could not be opened (logged
    at WARNING) or after :meth:`close`; every method then acts as on an empty cache.
    Thread-safe. No method raises for an OS or sqlite error (they log and return the empty
    result); only a :class:`CacheWriter` raises, OSError.
    """

    def __init__(self, directory: Path, *, max_bytes: int | None = None) -> None:
        """Open (creating it if needed) and reconcile the cache in ``directory``.

        Raises ValueError if ``max_bytes`` < 0; nothing else.
        """
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 or None, not {max_bytes}")
        self.dir = directory
        self.max_bytes = max_bytes
        self.usable = False
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._hot = HotPhrases()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._conn = open_index(directory)
        except (OSError, sqlite3.Error, IndexUnavailable) as exc:
            why = not_writable(directory)
            log.warning("phrase cache disabled: cannot open %s: %s%s", directory, exc, why)
            return
        self.usable = True
        try:
            with self._lock:
                reconcile(self._connection(), directory, max_bytes)
        except (OSError, sqlite3.Error) as exc:
            log.warning("phrase cache %s: reconciling failed, going on: %s", directory, exc)

    def __enter__(self) -> PhraseCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- public API ------------------------------------------------------------------------

    def get(
        self, key: str, *, record_hit: bool = True, found: Callable[[], object] | None = None
    ) -> CachedPhrase | None:
        """The verified phrase ``key``, or None (a miss).

        Checks the file's length, WAV parameters and PCM sha256 against the row; a bad entry is
        dropped (row and file), logged at WARNING, and missed. On success records a hit (see
        :meth:`record_hit`) unless ``record_hit`` is False: a player that wants the audio
        sooner records it once the audio plays. ``found`` is called (on this thread) as soon
        as the index has a row for ``key``, before its file is read and checked: a player
        gets ready meanwhile (the check rarely fails). Never raises, but what ``found``
        raises.
        """
        entry = self._entry(key)
        if entry is None:
            return None
        if found is not None:
            found()
        path = self._wav_path(entry.key)
        pcm, reason = read_checked(path, entry)
        if reason is not None:
            self._drop(entry, reason)
            return None
        self._hot.keep(entry, path)
        phrase = CachedPhrase(key, pcm, entry.rate_hz, entry.created)
        if record_hit:
            self.record_hit(phrase)
        return phrase

    def get_now(self, key: str) -> CachedPhrase | None:
        """Phrase ``key`` read on the caller's thread without waiting for a disk or the index,
        if :meth:`get` returned it lately and its file is unchanged and in the page cache
        (:mod:`edgespeak.sources.cache.hot`); else None: then call :meth:`get` (in a thread).
        Checked as :meth:`get` checks; records no hit. Never raises, never blocks on I/O."""
        return self._hot.read(key) if self.usable else None

    def record_hit(self, phrase: CachedPhrase) -> None:
        """Count a hit of ``phrase`` (from :meth:`get`): ``hits`` + 1, ``last_used`` = now,
        most recently used; nothing when its entry was stored again or removed since, or the
        cache is unusable. Never raises (a failure is logged)."""
        if not self.usable:
            return
        try:
            with self._lock:
                record_hit(self._connection(), phrase.key, phrase.created)
        except (sqlite3.Error, IndexUnavailable) as exc:
            log.warning("phrase cache %s: cannot record a hit: %s", phrase.key[:12], exc)

    def has(self, key: str) -> bool:
        """Whether the index has a row for ``key`` (file not verified, no hit recorded)."""
        return self._entry(key) is not None

    def writer(self, key: str, rate_hz: int, *, text: str, voice: str | None) -> CacheWriter | None:
        """A writer storing entry ``key`` of s16le mono PCM at ``rate_hz`` Hz, for ``text``
        (stored normalised) spoken by ``voice``; None when the cache is unusable or the
        temporary file cannot be created (logged at WARNING). Raises ValueError if ``key`` is
        not 64 lowercase hex digits or ``rate_hz`` < 1 (programming errors)."""
        if not KEY_RE.fullmatch(key):
            raise ValueError(f"phrase cache key must be 64 lowercase hex digits, not {key!r}")
        if rate_hz < 1:
            raise ValueError(f"rate_hz must be >= 1, not {rate_hz}")
        if not self.usable:
            return None
        try:
            return CacheWriter(self, key, rate_hz, text=text, voice=voice)
        except OSError as exc:
            log.warning("phrase cache %s: cannot write: %s", self.dir, exc)
            return None

    def set_pinned(self, keys: Collection[str]) -> None:
        """Make exactly ``keys`` pinned, replacing the previous pin set, in the index (so every
        process sees it). Keys not stored yet are stored pinned when committed. Entries that
        lose their pin are evicted by the next commit if over ``max_bytes``. Raises TypeError
        if ``keys`` is a str; logs other failures."""
        if isinstance(keys, str):
            raise TypeError("set_pinned takes a collection of keys, not one str")
        try:
            with self._lock, self._transaction() as conn:
                conn.execute("DELETE FROM pins")
                conn.executemany(
                    "INSERT OR IGNORE INTO pins (key) VALUES (?)", ((k,) for k in keys)
                )
                conn.execute("UPDATE entries SET pinned = key IN (SELECT key FROM pins)")
        except (sqlite3.Error, IndexUnavailable) as exc:
            log.warning("phrase cache %s: cannot set pins: %s", self.dir, exc)

    def entries(self) -> list[Entry]:
        """Every entry, most recently used (committed or hit) first. Never raises."""
        try:
            with self._lock:
                rows = (
                    self._connection()
                    .execute(f"SELECT {COLUMNS} FROM entries ORDER BY use_seq DESC")
                    .fetchall()
                )
        except (sqlite3.Error, IndexUnavailable) as exc:
            self._log_read_error(exc)
            return []
        return [entry_from_row(row) for row in rows]

    def count(self) -> int:
        """How many entries the cache holds. Never raises (0 when the index is unusable)."""
        try:
            with self._lock:
                row = self._connection().execute("SELECT COUNT(*) FROM entries").fetchone()
        except (sqlite3.Error, IndexUnavailable) as exc:
            self._log_read_error(exc)
            return 0
        return int(row[0])

    def total_bytes(self) -> int:
        """Total size in bytes of the entries' WAV files (index excluded). Never raises."""
        try:
            with self._lock:
                row = (
                    self._connection()
                    .execute("SELECT COALESCE(SUM(size_bytes), 0) FROM entries")
                    .fetchone()
                )
        except (sqlite3.Error, IndexUnavailable) as exc:
            self._log_read_error(exc)
            return 0
        return int(row[0])

    def verify(self, key: str) -> str | None:
        """None if entry ``key`` is good; else why not (``"not in cache"`` if there is no row,
        ``"cache unusable"``), and a bad entry is dropped as by :meth:`get`. No hit recorded."""
        if not self.usable:
            return "cache unusable"
        entry = self._entry(key)
        if entry is None:
            return "not in cache"
        _, reason = read_checked(self._wav_path(entry.key), entry)
        if reason is not None:
            self._drop(entry, reason)
        return reason

    def remove(self, key: str) -> bool:
        """Remove entry ``key`` (row and file, pinned or not; the pin set is unchanged).
        True if there was one. Never raises."""
        if not KEY_RE.fullmatch(key):
            return False
        try:
            with self._lock, self._transaction() as conn:
                gone = conn.execute("DELETE FROM entries WHERE key = ?", (key,)).rowcount > 0
                if gone:
                    self._wav_path(key).unlink(missing_ok=True)
        except (OSError, sqlite3.Error, IndexUnavailable) as exc:
            log.warning("phrase cache %s: cannot remove %s: %s", self.dir, key[:12], exc)
            return False
        return gone

    def purge(self, *, unpinned_only: bool = False) -> int:
        """Remove every entry (only unpinned ones with ``unpinned_only``); the pin set is
        unchanged. Returns how many entries were removed. Never raises."""
        where = " WHERE pinned = 0" if unpinned_only else ""
        try:
            with self._lock, self._transaction() as conn:
                keys = [row[0] for row in conn.execute(f"SELECT key FROM entries{where}")]
                conn.execute(f"DELETE FROM entries{where}")
                for key in keys:
                    self._wav_path(key).unlink(missing_ok=True)
        except (OSError, sqlite3.Error, IndexUnavailable) as exc:
            log.warning("phrase cache %s: cannot purge: %s", self.dir, exc)
            return 0
        return len(keys)

    def close(self) -> None:
        """Close the index; the cache is then unusable. Idempotent, never raises."""
        self._hot.close()
        with self._lock:
            conn, self._conn = self._conn, None
            self.usable = False
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()

    # -- internals -------------------------------------------------------------------------

    def _wav_path(self, key: str) -> Path:
        return wav_path(self.dir, key)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise IndexUnavailable("phrase cache is unusable or closed")
        return self._conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any
        exception). The caller holds ``_lock``."""
        with transaction(self._connection()) as conn:
            yield conn

    def _log_read_error(self, exc: Exception) -> None:
        if self.usable:
            log.warning("phrase cache %s: index read failed: %s", self.dir, exc)

    def _entry(self, key: str) -> Entry | None:
        """The row for ``key``, or None (no row, bad key, unusable, index error logged)."""
        if not self.usable or not KEY_RE.fullmatch(key):
            return None
        try:
            with self._lock:
                row = (
                    self._connection()
                    .execute(f"SELECT {COLUMNS} FROM entries WHERE key = ?", (key,))
                    .fetchone()
                )
        except (sqlite3.Error, IndexUnavailable) as exc:
            self._log_read_error(exc)
            return None
        return None if row is None else entry_from_row(row)

    def _drop(self, entry: Entry, reason: str) -> None:
        """Remove a bad entry (row and file) unless another process replaced it meanwhile."""
        try:
            with self._lock, self._transaction() as conn:
                dropped = (
                    conn.execute(
                        "DELETE FROM entries WHERE key = ? AND created = ? AND sha256 = ?",
                        (entry.key, entry.created, entry.sha256),
                    ).rowcount
                    > 0
                )
                if dropped:
                    self._wav_path(entry.key).unlink(missing_ok=True)
        except (OSError, sqlite3.Error, IndexUnavailable) as exc:
            log.warning(
                "phrase cache: bad entry %s (%r): %s; cannot drop it: %s",
                entry.key,
                entry.text[:60],
                reason,
                exc,
            )
            return
        if dropped:
            log.warning(
                "phrase cache: dropped bad entry %s (%r): %s", entry.key, entry.text[:60], reason
            )
        else:
            log.debug("phrase cache: entry %s changed while being read (%s)", entry.key, reason)

    def _store(
        self,
        key: str,
        tmp: Path,
        *,
        text: str,
        voice: str | None,
        rate_hz: int,
        frames: int,
        sha256: str,
    ) -> Entry | None:
        """Commit the complete, fsynced WAV ``tmp`` as entry ``key`` (see
        :meth:`CacheWriter.commit`). Raises OSError."""
        size = WAV_HEADER_BYTES + frames * FRAME_BYTES
        final = self._wav_path(key)
        renamed = False
        with self._lock:
            try:
                with self._transaction() as conn:
                    row = conn.execute(
                        f"SELECT {COLUMNS} FROM entries WHERE key = ?", (key,)
                    ).fetchone()
                    if row is not None:
                        log.debug("phrase cache %s: already stored, dropping the copy", key[:12])
                        return entry_from_row(row)
                    pinned = (
                        conn.execute("SELECT 1 FROM pins WHERE key = ?", (key,)).fetchone()
                        is not None
                    )
                    now = time.time()
                    entry = Entry(
                        key, text, voice, rate_hz, frames, size, sha256, now, now, 0, pinned
                    )
                    store = pinned or fits_beside_pins(conn, self.max_bytes, size)
                    if store:
                        conn.execute(
                            f"INSERT INTO entries ({COLUMNS}, use_seq)"
                            f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {NEXT_SEQ})",
                            (key, text, voice, rate_hz, frames, size, sha256, now, now, 0, pinned),
                        )
                    evict(conn, self.dir, self.max_bytes, keep=key)
                    if store:
                        os.replace(tmp, final)
                        renamed = True
                        fsync_dir(self.dir)
            except (OSError, sqlite3.Error, IndexUnavailable) as exc:
                if renamed:  # the row was rolled back: the file must not stay
                    with contextlib.suppress(OSError):
                        final.unlink()
                raise as_os_error(exc, f"phrase cache commit of {key[:12]} failed") from exc
        if not store:
            log.info(
                "phrase cache: not storing %s (%d bytes): it does not fit in max_bytes %s"
                " beside the pinned entries",
                key[:12],
                size,
                self.max_bytes,
            )
            return None
        return entry
