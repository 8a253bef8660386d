"""The phrase cache's sqlite index ``<dir>/index.sqlite3``: schema, opening, transactions.

WAL mode (readers never wait), ``synchronous=NORMAL``, busy timeout 5 s for writers of other
processes. Table ``entries``: one row per entry, ``use_seq`` the recency sequence number
(bumped on every commit and hit). Table ``pins``: the keys that must be stored pinned. A
corrupt index file is moved aside (``index.sqlite3.corrupt``) and replaced by an empty one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgespeak.base.errors import CacheError
from edgespeak.sources.cache.entry import Entry

log = logging.getLogger("edgespeak.sources.cache")

INDEX_NAME = "index.sqlite3"
BUSY_TIMEOUT_S = 5.0  # how long an index write waits for another process's write
SCHEMA_VERSION = 1

_CORRUPT_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB (primary result codes)
_SQLITE_FULL = 13
COLUMNS = "key, text, voice, rate_hz, frames, size_bytes, sha256, created, last_used, hits, pinned"
NEXT_SEQ = "(SELECT COALESCE(MAX(use_seq), 0) + 1 FROM entries)"
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


class IndexUnavailable(CacheError):
    """The index is closed, unusable, or of an unknown schema version."""


class CorruptIndex(IndexUnavailable):
    """The index file is not a sqlite database or is damaged."""


def open_index(directory: Path) -> sqlite3.Connection:
    """Open the index of the cache in ``directory``, replacing a corrupt one by an empty one
    (logged at WARNING). Raises OSError, sqlite3.Error or IndexUnavailable."""
    path = directory / INDEX_NAME
    try:
        return _connect(path)
    except CorruptIndex as exc:
        aside = path.with_name(f"{INDEX_NAME}.corrupt")
        log.warning("phrase cache index %s is corrupt (%s); moved to %s", path, exc, aside)
        os.replace(path, aside)
        for suffix in ("-wal", "-shm"):
            path.with_name(INDEX_NAME + suffix).unlink(missing_ok=True)
        return _connect(path)


def _connect(path: Path) -> sqlite3.Connection:
    """Open and set up the index at ``path``.

    Raises CorruptIndex, IndexUnavailable or sqlite3.Error.
    """
    conn = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL").fetchone()
        conn.execute("PRAGMA synchronous=NORMAL")
        check = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if check != ["ok"]:
            raise CorruptIndex("; ".join(str(c) for c in check[:3]))
        conn.execute("BEGIN IMMEDIATE")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            conn.execute("ROLLBACK")
            raise IndexUnavailable(f"index schema version {version}, this edgespeak knows 1")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        conn.close()
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _CORRUPT_CODES:
            raise CorruptIndex(str(exc)) from exc
        raise
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction on ``conn`` (``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any
    exception). Raises sqlite3.Error (busy for more than 5 s, I/O, full disk)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def record_hit(conn: sqlite3.Connection, key: str, created: float) -> None:
    """Count a hit of entry ``key`` if its row is still the one ``created`` then: ``hits`` + 1,
    ``last_used`` = now, most recently used. Raises sqlite3.Error."""
    conn.execute(
        f"UPDATE entries SET hits = hits + 1, last_used = ?, use_seq = {NEXT_SEQ}"
        " WHERE key = ? AND created = ?",
        (time.time(), key, created),
    )


def entry_from_row(row: tuple[Any, ...]) -> Entry:
    """The :class:`Entry` of a row selected as :data:`COLUMNS`."""
    key, text, voice, rate_hz, frames, size, sha, created, last_used, hits, pinned = row
    return Entry(
        key, text, voice, rate_hz, frames, size, sha, created, last_used, hits, bool(pinned)
    )


def as_os_error(exc: Exception, message: str) -> OSError:
    """``exc`` as an OSError carrying ``message``; a full disk keeps ENOSPC."""
    if isinstance(exc, OSError):
        return OSError(exc.errno, f"{message}: {exc.strerror or exc}")
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == _SQLITE_FULL:
        return OSError(errno.ENOSPC, f"{message}: {exc}")
    return OSError(errno.EIO, f"{message}: {exc}")


def not_writable(directory: Path) -> str:
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
