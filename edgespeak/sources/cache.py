"""Persistent, content-addressed phrase cache: synthesised phrases stored as WAV files.

Layout of the cache directory::

    <dir>/<key>.wav          one entry: canonical 44-byte WAV header (as Python's ``wave``
                             writes it) + s16le mono PCM; playable with ``aplay``
    <dir>/index.sqlite3      the index (WAL mode, plus its ``-wal`` and ``-shm`` files):
                             table ``entries``, one row per entry, and table ``pins``, the
                             keys that must be stored pinned (stored yet or not)
    <dir>/.<key16>.<rnd>.tmp an entry being written (a writer in this or another process)

``key`` is :func:`cache_key`: 64 lowercase hex digits (sha256 over provider, endpoint, model,
voice, format, sample rate, prosody and normalised text). The daemon and the CLI may use one
directory at once: sqlite serialises writers (busy timeout 5 s), readers never wait (WAL).

Integrity. A writer streams PCM into a temporary file in the same directory, then
:meth:`CacheWriter.commit` completes the header and fsyncs it, and, in one index write
transaction, ``BEGIN IMMEDIATE`` → ``INSERT`` the row → ``os.replace`` the temporary file onto
``<key>.wav`` → fsync the directory → ``COMMIT``. Every change of a ``.wav`` file (rename in,
eviction, removal, dropping a bad entry) happens inside the index write transaction that records
it, so under the write lock the directory and the committed index agree, except for crash
leftovers. A row is what makes an entry exist: :meth:`PhraseCache.get` never plays a file
without a row, and checks on every read the file length (``44 + 2 * frames`` bytes), the WAV
parameters (mono, 16-bit, the row's rate and frame count) and the sha256 of the PCM against the
row. A bad entry (missing, truncated, empty, garbage, altered) is dropped (row and file), logged
at WARNING, and reported as a miss so the caller synthesises again: never played as silence.

Crash safety (SIGKILL or power loss at any moment). Before ``COMMIT`` the row does not exist
(sqlite rolls the transaction back): what is left is a ``.tmp`` file or an orphan ``.wav``,
neither of which plays. After ``COMMIT`` the row and the file, both fsynced, match. Opening the
cache reconciles, holding the index write lock: ``.tmp`` files older than 60 s are removed
(younger ones may belong to a live writer in another process), orphan ``.wav`` files (no row)
are removed, rows whose file is missing are removed, and the size bound is applied.

Bounds and pins. With ``max_bytes`` set, each commit evicts least recently used unpinned entries
until the entries' total ``size_bytes`` is at most ``max_bytes``. Recency is a sequence number
bumped on every commit and hit (one counter for all processes, taken under the index write
lock), so it never depends on wall-clock resolution or clock steps; ``last_used`` is kept for
display. Pinned entries are never evicted.

Failure policy: the cache never takes speech down. A directory or index that cannot be opened
leaves the cache ``usable = False``, behaving as an empty cache. A corrupt index is moved aside
(``index.sqlite3.corrupt``) and replaced by an empty one. Reading methods log and return an empty
result instead of raising; only :class:`CacheWriter` raises, and only :class:`OSError`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import re
import sqlite3
import struct
import tempfile
import threading
import time
import wave
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from edgespeak.base.pcm import FRAME_BYTES, FrameCarry, wav_header
from edgespeak.config import Settings
from edgespeak.providers.fish_request import audio_identity, provider_request

log = logging.getLogger(__name__)

WAV_HEADER_BYTES = 44
INDEX_NAME = "index.sqlite3"
TMP_GRACE_S = 60.0  # a younger .tmp file may belong to a live writer in another process
BUSY_TIMEOUT_S = 5.0  # how long an index write waits for another process's write
SCHEMA_VERSION = 1
KEY_VERSION = 1  # bump to invalidate every key when what a key covers changes

_KEY_RE = re.compile(r"[0-9a-f]{64}")
_MAX_DATA_BYTES = 0xFFFF_FFFF - 36  # a RIFF size is 32 bits
_CORRUPT_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB (primary result codes)
_SQLITE_FULL = 13
_COLUMNS = "key, text, voice, rate_hz, frames, size_bytes, sha256, created, last_used, hits, pinned"
_NEXT_SEQ = "(SELECT COALESCE(MAX(use_seq), 0) + 1 FROM entries)"
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS entries (
        key TEXT PRIMARY KEY NOT NULL,
        text TEXT NOT NULL,
        voice TEXT,
        rate_hz INTEGER NOT NULL,
        frames INTEGER NOT NULL,
        size_bytes INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        created REAL NOT NULL,
        last_used REAL NOT NULL,
        hits INTEGER NOT NULL DEFAULT 0,
        pinned INTEGER NOT NULL DEFAULT 0,
        use_seq INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS entries_use_seq ON entries (use_seq)",
    "CREATE TABLE IF NOT EXISTS pins (key TEXT PRIMARY KEY NOT NULL)",
)


def normalise_text(text: str) -> str:
    """``text`` with every run of whitespace (Unicode included) folded to one space and the
    ends stripped; case and punctuation are kept."""
    return " ".join(text.split())


def cache_key(
    *,
    provider: str,
    endpoint: str,
    model: str,
    voice: str | None,
    format: str,
    sample_rate: int | None,
    prosody: Mapping[str, Any] | None,
    text: str,
    options: Mapping[str, Any] | None = None,
) -> str:
    """The key of one phrase as one provider would speak it: 64 lowercase hex digits.

    sha256 over a canonical JSON (sorted keys, compact, UTF-8) of every field, ``text``
    normalised by :func:`normalise_text`. ``sample_rate`` is the requested rate in Hz (None =
    provider default). ``prosody`` must be JSON-serialisable (else TypeError); an empty mapping
    counts as None. ``options``: any other request fields that shape the audio (JSON-
    serialisable; None adds nothing, so keys made without it are unchanged). Any other
    difference (case, voice, format…) gives another key.
    """
    body = {
        "v": KEY_VERSION,
        "provider": provider,
        "endpoint": endpoint,
        "model": model,
        "voice": voice,
        "format": format,
        "sample_rate": sample_rate,
        "prosody": dict(prosody) if prosody else None,
        "text": normalise_text(text),
    }
    if options is not None:
        body["options"] = dict(options)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


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
    """A verified entry, loaded: ``pcm`` is bytes of s16le mono PCM at ``rate_hz`` Hz."""

    key: str
    pcm: bytes
    rate_hz: int

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


class CacheWriter:
    """Streams one phrase's PCM into a temporary file; :meth:`commit` stores it as an entry.

    Get one from :meth:`PhraseCache.writer`. Not thread-safe: one owner writes, then calls
    exactly one of :meth:`commit` or :meth:`discard` (calling :meth:`discard` again, or after
    :meth:`commit`, is harmless). Any failure raises :class:`OSError` only, and leaves no file.
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


class PhraseCache:
    """The phrase cache in directory ``dir`` (see the module docstring).

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
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._conn = self._open_index()
        except (OSError, sqlite3.Error, _IndexUnavailable) as exc:
            why = _not_writable(directory)
            log.warning("phrase cache disabled: cannot open %s: %s%s", directory, exc, why)
            return
        self.usable = True
        try:
            self._reconcile()
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

    def get(self, key: str) -> CachedPhrase | None:
        """The verified phrase ``key``, or None (a miss).

        Checks the file's length, WAV parameters and PCM sha256 against the row; a bad entry is
        dropped (row and file), logged at WARNING, and missed. On success records a hit:
        ``hits`` + 1, ``last_used`` = now, most recently used. Never raises.
        """
        entry = self._entry(key)
        if entry is None:
            return None
        pcm, reason = self._read_checked(entry)
        if reason is not None:
            self._drop(entry, reason)
            return None
        try:
            with self._lock:
                conn = self._connection()
                conn.execute(
                    f"UPDATE entries SET hits = hits + 1, last_used = ?, use_seq = {_NEXT_SEQ}"
                    " WHERE key = ? AND created = ?",
                    (time.time(), key, entry.created),
                )
        except (sqlite3.Error, _IndexUnavailable) as exc:
            log.warning("phrase cache %s: cannot record a hit: %s", key[:12], exc)
        return CachedPhrase(key, pcm, entry.rate_hz)

    def has(self, key: str) -> bool:
        """Whether the index has a row for ``key`` (file not verified, no hit recorded)."""
        return self._entry(key) is not None

    def writer(self, key: str, rate_hz: int, *, text: str, voice: str | None) -> CacheWriter | None:
        """A writer storing entry ``key`` of s16le mono PCM at ``rate_hz`` Hz, for ``text``
        (stored normalised) spoken by ``voice``; None when the cache is unusable or the
        temporary file cannot be created (logged at WARNING). Raises ValueError if ``key`` is
        not 64 lowercase hex digits or ``rate_hz`` < 1 (programming errors)."""
        if not _KEY_RE.fullmatch(key):
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
        except (sqlite3.Error, _IndexUnavailable) as exc:
            log.warning("phrase cache %s: cannot set pins: %s", self.dir, exc)

    def entries(self) -> list[Entry]:
        """Every entry, most recently used (committed or hit) first. Never raises."""
        try:
            with self._lock:
                rows = (
                    self._connection()
                    .execute(f"SELECT {_COLUMNS} FROM entries ORDER BY use_seq DESC")
                    .fetchall()
                )
        except (sqlite3.Error, _IndexUnavailable) as exc:
            self._log_read_error(exc)
            return []
        return [_entry_from_row(row) for row in rows]

    def count(self) -> int:
        """How many entries the cache holds. Never raises (0 when the index is unusable)."""
        try:
            with self._lock:
                row = self._connection().execute("SELECT COUNT(*) FROM entries").fetchone()
        except (sqlite3.Error, _IndexUnavailable) as exc:
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
        except (sqlite3.Error, _IndexUnavailable) as exc:
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
        _, reason = self._read_checked(entry)
        if reason is not None:
            self._drop(entry, reason)
        return reason

    def remove(self, key: str) -> bool:
        """Remove entry ``key`` (row and file, pinned or not; the pin set is unchanged).
        True if there was one. Never raises."""
        if not _KEY_RE.fullmatch(key):
            return False
        try:
            with self._lock, self._transaction() as conn:
                gone = conn.execute("DELETE FROM entries WHERE key = ?", (key,)).rowcount > 0
                if gone:
                    self._wav_path(key).unlink(missing_ok=True)
        except (OSError, sqlite3.Error, _IndexUnavailable) as exc:
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
        except (OSError, sqlite3.Error, _IndexUnavailable) as exc:
            log.warning("phrase cache %s: cannot purge: %s", self.dir, exc)
            return 0
        return len(keys)

    def close(self) -> None:
        """Close the index; the cache is then unusable. Idempotent, never raises."""
        with self._lock:
            conn, self._conn = self._conn, None
            self.usable = False
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()

    # -- internals -------------------------------------------------------------------------

    def _wav_path(self, key: str) -> Path:
        return self.dir / f"{key}.wav"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise _IndexUnavailable("phrase cache is unusable or closed")
        return self._conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any
        exception). The caller holds ``_lock``."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def _log_read_error(self, exc: Exception) -> None:
        if self.usable:
            log.warning("phrase cache %s: index read failed: %s", self.dir, exc)

    def _entry(self, key: str) -> Entry | None:
        """The row for ``key``, or None (no row, bad key, unusable, index error logged)."""
        if not self.usable or not _KEY_RE.fullmatch(key):
            return None
        try:
            with self._lock:
                row = (
                    self._connection()
                    .execute(f"SELECT {_COLUMNS} FROM entries WHERE key = ?", (key,))
                    .fetchone()
                )
        except (sqlite3.Error, _IndexUnavailable) as exc:
            self._log_read_error(exc)
            return None
        return None if row is None else _entry_from_row(row)

    def _read_checked(self, entry: Entry) -> tuple[bytes, str | None]:
        """(PCM, None) if ``entry``'s file matches its row, else (b"", reason)."""
        expected = WAV_HEADER_BYTES + entry.frames * FRAME_BYTES
        try:
            with open(self._wav_path(entry.key), "rb") as file:
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
        return pcm, _check_wav(header, pcm, entry)

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
        except (OSError, sqlite3.Error, _IndexUnavailable) as exc:
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
                        f"SELECT {_COLUMNS} FROM entries WHERE key = ?", (key,)
                    ).fetchone()
                    if row is not None:
                        log.debug("phrase cache %s: already stored, dropping the copy", key[:12])
                        return _entry_from_row(row)
                    pinned = (
                        conn.execute("SELECT 1 FROM pins WHERE key = ?", (key,)).fetchone()
                        is not None
                    )
                    now = time.time()
                    entry = Entry(
                        key, text, voice, rate_hz, frames, size, sha256, now, now, 0, pinned
                    )
                    store = pinned or self._fits_beside_pins(conn, size)
                    if store:
                        conn.execute(
                            f"INSERT INTO entries ({_COLUMNS}, use_seq)"
                            f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {_NEXT_SEQ})",
                            (key, text, voice, rate_hz, frames, size, sha256, now, now, 0, pinned),
                        )
                    self._evict(conn, keep=key)
                    if store:
                        os.replace(tmp, final)
                        renamed = True
                        _fsync_dir(self.dir)
            except (OSError, sqlite3.Error, _IndexUnavailable) as exc:
                if renamed:  # the row was rolled back: the file must not stay
                    with contextlib.suppress(OSError):
                        final.unlink()
                raise _as_os_error(exc, f"phrase cache commit of {key[:12]} failed") from exc
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

    def _fits_beside_pins(self, conn: sqlite3.Connection, size: int) -> bool:
        if self.max_bytes is None:
            return True
        pinned_total = conn.execute(
            "SELECT COALESCE(SUM(size_bytes), 0) FROM entries WHERE pinned = 1"
        ).fetchone()[0]
        return int(pinned_total) + size <= self.max_bytes

    def _evict(self, conn: sqlite3.Connection, *, keep: str) -> None:
        """Inside a write transaction: delete least recently used unpinned entries (never
        ``keep``) until the total is within ``max_bytes``."""
        if self.max_bytes is None:
            return
        total, pinned_total = conn.execute(
            "SELECT COALESCE(SUM(size_bytes), 0),"
            " COALESCE(SUM(CASE WHEN pinned = 1 THEN size_bytes ELSE 0 END), 0) FROM entries"
        ).fetchone()
        if total <= self.max_bytes:
            return
        if pinned_total > self.max_bytes:
            log.warning(
                "phrase cache %s: pinned entries take %d bytes, over max_bytes %d; keeping them",
                self.dir,
                pinned_total,
                self.max_bytes,
            )
        victims = conn.execute(
            "SELECT key, size_bytes FROM entries WHERE pinned = 0 AND key != ? ORDER BY use_seq",
            (keep,),
        ).fetchall()
        for key, size in victims:
            if total <= self.max_bytes:
                break
            conn.execute("DELETE FROM entries WHERE key = ?", (key,))
            self._wav_path(key).unlink(missing_ok=True)
            total -= size
            log.info("phrase cache: evicted %s (%d bytes)", key[:12], size)

    def _open_index(self) -> sqlite3.Connection:
        """Open the index, replacing a corrupt one by an empty one. Raises OSError,
        sqlite3.Error or _IndexUnavailable."""
        path = self.dir / INDEX_NAME
        try:
            return _connect(path)
        except _CorruptIndex as exc:
            aside = path.with_name(f"{INDEX_NAME}.corrupt")
            log.warning("phrase cache index %s is corrupt (%s); moved to %s", path, exc, aside)
            os.replace(path, aside)
            for suffix in ("-wal", "-shm"):
                path.with_name(INDEX_NAME + suffix).unlink(missing_ok=True)
            return _connect(path)

    def _reconcile(self) -> None:
        """Remove stale temporary files, orphan files, rows without a file; apply the bound."""
        now = time.time()
        with os.scandir(self.dir) as it:
            for item in it:
                if item.name.startswith(".") and item.name.endswith(".tmp"):
                    try:
                        if now - item.stat().st_mtime > TMP_GRACE_S:
                            os.unlink(item.path)
                            log.info("phrase cache: removed stale temporary file %s", item.name)
                    except FileNotFoundError:
                        pass
        with self._lock, self._transaction() as conn:
            # Holding the write lock: no writer is between its rename and its COMMIT.
            with os.scandir(self.dir) as it:
                files = {
                    item.name[:-4]
                    for item in it
                    if item.name.endswith(".wav")
                    and _KEY_RE.fullmatch(item.name[:-4])
                    and item.is_file(follow_symlinks=False)
                }
            rows = {row[0] for row in conn.execute("SELECT key FROM entries")}
            for key in sorted(files - rows):
                self._wav_path(key).unlink(missing_ok=True)
                log.info("phrase cache: removed orphan file %s.wav (no index row)", key)
            for key in sorted(rows - files):
                conn.execute("DELETE FROM entries WHERE key = ?", (key,))
                log.warning("phrase cache: removed entry %s: its file is missing", key)
            self._evict(conn, keep="")


class _IndexUnavailable(Exception):
    """The index is closed, unusable, or of an unknown schema version."""


class _CorruptIndex(_IndexUnavailable):
    """The index file is not a sqlite database or is damaged."""


def _connect(path: Path) -> sqlite3.Connection:
    """Open and set up the index at ``path``.

    Raises _CorruptIndex, _IndexUnavailable or sqlite3.Error.
    """
    conn = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL").fetchone()
        conn.execute("PRAGMA synchronous=NORMAL")
        check = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if check != ["ok"]:
            raise _CorruptIndex("; ".join(str(c) for c in check[:3]))
        conn.execute("BEGIN IMMEDIATE")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            conn.execute("ROLLBACK")
            raise _IndexUnavailable(f"index schema version {version}, this edgespeak knows 1")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        conn.close()
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _CORRUPT_CODES:
            raise _CorruptIndex(str(exc)) from exc
        raise
    except BaseException:
        conn.close()
        raise
    return conn


def _check_wav(header: bytes, pcm: bytes, entry: Entry) -> str | None:
    """Why ``header`` + ``pcm`` (lengths already checked) do not match ``entry``, or None."""
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
    if header != wav_header(entry.rate_hz, data_bytes=entry.frames * FRAME_BYTES):
        return "non-canonical WAV header"
    if hashlib.sha256(pcm).hexdigest() != entry.sha256:
        return "PCM checksum mismatch"
    return None


def _entry_from_row(row: tuple[Any, ...]) -> Entry:
    key, text, voice, rate_hz, frames, size, sha, created, last_used, hits, pinned = row
    return Entry(
        key, text, voice, rate_hz, frames, size, sha, created, last_used, hits, bool(pinned)
    )


def _not_writable(directory: Path) -> str:
    """`` (read-only file system)`` or `` (no write permission)`` when ``directory`` cannot be
    written (sqlite then only says "unable to open database file"), else ``""``."""
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return " (read-only file system)"
        if not os.access(directory, os.W_OK):
            return " (no write permission)"
    except OSError:
        pass
    return ""


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _as_os_error(exc: Exception, message: str) -> OSError:
    """``exc`` as an OSError carrying ``message``; a full disk keeps ENOSPC."""
    if isinstance(exc, OSError):
        return OSError(exc.errno, f"{message}: {exc.strerror or exc}")
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == _SQLITE_FULL:
        return OSError(errno.ENOSPC, f"{message}: {exc}")
    return OSError(errno.EIO, f"{message}: {exc}")


def phrase_key(
    settings: Settings,
    endpoint: str,
    text: str,
    voice: str | None = None,
    *,
    request: dict[str, Any] | None = None,
) -> str:
    """The cache key of ``text`` spoken by the configured provider: in ``voice`` with the
    ``[tts]`` settings, or exactly as ``request`` (a
    :func:`~edgespeak.providers.fish_request.provider_request`) asks. Every
    request field that changes the audio is part of it (prosody, reference audio, latency,
    bitrate…; see :func:`edgespeak.providers.fish_request.audio_identity`)."""
    request = request if request is not None else provider_request(settings, voice)
    prosody, options = audio_identity(request)
    return cache_key(
        provider=settings.tts.provider,
        endpoint=endpoint,
        model=settings.tts.model,
        voice=request.get("reference_id"),
        format=str(request.get("format")),
        sample_rate=settings.tts.rate_hz,
        prosody=prosody,
        options=options,
        text=text,
    )
