"""Opening reconciles the directory with the index after a crash (SIGKILL, power loss).

Under the index write lock no writer is between its rename and its ``COMMIT``, so what does not
match is a crash leftover: ``.tmp`` files older than :data:`TMP_GRACE_S` (younger ones may
belong to a live writer in another process), ``<key>.wav`` files without a row, and rows
without a file, are removed; then the size bound is applied.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from edgespeak.sources.cache.bounds import evict
from edgespeak.sources.cache.entry import wav_path
from edgespeak.sources.cache.index import transaction
from edgespeak.sources.cache.key import KEY_RE

log = logging.getLogger("edgespeak.sources.cache")

TMP_GRACE_S = 60.0  # a younger .tmp file may belong to a live writer in another process


def reconcile(conn: sqlite3.Connection, directory: Path, max_bytes: int | None) -> None:
    """Remove stale temporary files, orphan files and rows without a file in ``directory``,
    then evict down to ``max_bytes``. The caller holds the cache's lock. Raises OSError or
    sqlite3.Error."""
    now = time.time()
    with os.scandir(directory) as it:
        for item in it:
            if item.name.startswith(".") and item.name.endswith(".tmp"):
                try:
                    if now - item.stat().st_mtime > TMP_GRACE_S:
                        os.unlink(item.path)
                        log.info("phrase cache: removed stale temporary file %s", item.name)
                except FileNotFoundError:
                    pass
    with transaction(conn):
        # Holding the write lock: no writer is between its rename and its COMMIT.
        with os.scandir(directory) as it:
            files = {
                item.name[:-4]
                for item in it
                if item.name.endswith(".wav")
                and KEY_RE.fullmatch(item.name[:-4])
                and item.is_file(follow_symlinks=False)
            }
        rows = {row[0] for row in conn.execute("SELECT key FROM entries")}
        for key in sorted(files - rows):
            wav_path(directory, key).unlink(missing_ok=True)
            log.info("phrase cache: removed orphan file %s.wav (no index row)", key)
        for key in sorted(rows - files):
            conn.execute("DELETE FROM entries WHERE key = ?", (key,))
            log.warning("phrase cache: removed entry %s: its file is missing", key)
        evict(conn, directory, max_bytes, keep="")
