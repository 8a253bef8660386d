"""The size bound: least recently used unpinned entries go when the entries exceed it.

Recency is ``use_seq``, one sequence number for all processes bumped under the index write
lock on every commit and hit (never wall-clock time). Pinned entries are never evicted.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from edgespeak.sources.cache.entry import wav_path

log = logging.getLogger("edgespeak.sources.cache")


def fits_beside_pins(conn: sqlite3.Connection, max_bytes: int | None, size: int) -> bool:
    """Whether an entry of ``size`` bytes fits in ``max_bytes`` (None = unbounded) beside the
    pinned entries. Raises sqlite3.Error."""
    if max_bytes is None:
        return True
    pinned_total = conn.execute(
        "SELECT COALESCE(SUM(size_bytes), 0) FROM entries WHERE pinned = 1"
    ).fetchone()[0]
    return int(pinned_total) + size <= max_bytes


def evict(conn: sqlite3.Connection, directory: Path, max_bytes: int | None, *, keep: str) -> None:
    """Inside a write transaction on ``conn``: delete least recently used unpinned entries (row
    and file in ``directory``; never ``keep``) until the entries total at most ``max_bytes``
    bytes (None: nothing to do). Raises sqlite3.Error or OSError."""
    if max_bytes is None:
        return
    total, pinned_total = conn.execute(
        "SELECT COALESCE(SUM(size_bytes), 0),"
        " COALESCE(SUM(CASE WHEN pinned = 1 THEN size_bytes ELSE 0 END), 0) FROM entries"
    ).fetchone()
    if total <= max_bytes:
        return
    if pinned_total > max_bytes:
        log.warning(
            "phrase cache %s: pinned entries take %d bytes, over max_bytes %d; keeping them",
            directory,
            pinned_total,
            max_bytes,
        )
    victims = conn.execute(
        "SELECT key, size_bytes FROM entries WHERE pinned = 0 AND key != ? ORDER BY use_seq",
        (keep,),
    ).fetchall()
    for key, size in victims:
        if total <= max_bytes:
            break
        conn.execute("DELETE FROM entries WHERE key = ?", (key,))
        wav_path(directory, key).unlink(missing_ok=True)
        total -= size
        log.info("phrase cache: evicted %s (%d bytes)", key[:12], size)
