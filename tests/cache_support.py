"""Shared by the phrase-cache tests: keys, distinct PCM, storing, and looking at the directory
and the index from outside the cache."""

from __future__ import annotations

import contextlib
import sqlite3
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from edgespeak.sources.cache import Entry, PhraseCache, cache_key

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000
OLD = 3600.0  # seconds: a temporary file this old is stale


def key_for(
    text: str,
    *,
    provider: str = "fish",
    endpoint: str = "ws://127.0.0.1:1/v1/tts/live",
    model: str = "s1",
    voice: str | None = None,
    format: str = "pcm",
    sample_rate: int | None = RATE,
    prosody: Mapping[str, Any] | None = None,
) -> str:
    return cache_key(
        provider=provider,
        endpoint=endpoint,
        model=model,
        voice=voice,
        format=format,
        sample_rate=sample_rate,
        prosody=prosody,
        text=text,
    )


def pcm_for(seed: int, frames: int = 1000) -> bytes:
    """Distinct, non-silent s16le mono PCM for each seed."""
    return struct.pack(
        f"<{frames}h", *(((i * 37 + seed * 101) % 20000) - 10000 for i in range(frames))
    )


def store(cache: PhraseCache, key: str, pcm: bytes, text: str = "hello") -> Entry:
    writer = cache.writer(key, RATE, text=text, voice=None)
    assert writer is not None
    writer.write(pcm)
    entry = writer.commit()
    assert entry is not None
    return entry


def files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if not p.name.startswith("index.sqlite3")}


def index_rows(directory: Path) -> dict[str, tuple[object, ...]]:
    """The index read with plain sqlite3, not through the cache."""
    conn = sqlite3.connect(directory / "index.sqlite3")
    try:
        rows = conn.execute("SELECT key, text, voice, size_bytes, hits, pinned FROM entries")
        return {row[0]: row[1:] for row in rows}
    finally:
        conn.close()


@contextlib.contextmanager
def opener(cache_dir: Path) -> Iterator[Callable[..., PhraseCache]]:
    """``make(max_bytes=None)`` opens a PhraseCache on ``cache_dir``; all are closed after."""
    opened: list[PhraseCache] = []

    def make(max_bytes: int | None = None) -> PhraseCache:
        cache = PhraseCache(cache_dir, max_bytes=max_bytes)
        opened.append(cache)
        return cache

    yield make
    for cache in opened:
        cache.close()
