"""The phrase cache's size bound and pins, on a real filesystem with real sqlite."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgespeak.sources.cache import PhraseCache
from tests.cache_support import RATE, files, key_for, opener, pcm_for, store


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def open_cache(cache_dir: Path) -> Iterator[Callable[..., PhraseCache]]:
    with opener(cache_dir) as make:
        yield make


# -- bounds and pins ------------------------------------------------------------------------

SIZE = 44 + 2 * 1000  # bytes of one test entry


def test_eviction_is_least_recently_used(open_cache: Callable[..., PhraseCache]) -> None:
    cache = open_cache(max_bytes=2 * SIZE)
    a, b, c, d = (key_for(t) for t in "abcd")
    store(cache, a, pcm_for(1))
    store(cache, b, pcm_for(2))
    assert cache.get(a) is not None  # a is now more recent than b
    store(cache, c, pcm_for(3))
    assert [e.key for e in cache.entries()] == [c, a]
    assert not cache.has(b)
    assert cache.total_bytes() == 2 * SIZE
    store(cache, d, pcm_for(4))
    assert [e.key for e in cache.entries()] == [d, c]
    assert len([p for p in cache.dir.iterdir() if p.suffix == ".wav"]) == 2


def test_pinned_entries_are_never_evicted(
    open_cache: Callable[..., PhraseCache], caplog: pytest.LogCaptureFixture
) -> None:
    cache = open_cache(max_bytes=SIZE)
    p1, p2, free = key_for("pin one"), key_for("pin two"), key_for("free")
    cache.set_pinned([p1, p2])  # neither stored yet
    with caplog.at_level(logging.WARNING, logger="edgespeak.sources.cache"):
        assert store(cache, p1, pcm_for(1)).pinned
        assert store(cache, p2, pcm_for(2)).pinned
    assert any("pinned entries take" in r.getMessage() for r in caplog.records)
    assert {e.key for e in cache.entries()} == {p1, p2}
    writer = cache.writer(free, RATE, text="free", voice=None)
    assert writer is not None
    writer.write(pcm_for(3))
    assert writer.commit() is None  # does not fit beside the pins
    assert {e.key for e in cache.entries()} == {p1, p2}
    assert not (cache.dir / f"{free}.wav").exists()
    assert cache.get(p1) is not None and cache.get(p2) is not None


def test_set_pinned_replaces_the_pin_set(open_cache: Callable[..., PhraseCache]) -> None:
    cache = open_cache(max_bytes=2 * SIZE)
    a, b, c = key_for("a"), key_for("b"), key_for("c")
    store(cache, a, pcm_for(1))
    cache.set_pinned({a})
    store(cache, b, pcm_for(2))
    store(cache, c, pcm_for(3))  # evicts b, not the older but pinned a
    assert {e.key: e.pinned for e in cache.entries()} == {a: True, c: False}
    cache.set_pinned({c})
    assert {e.key: e.pinned for e in cache.entries()} == {a: False, c: True}
    store(cache, b, pcm_for(2))  # now a is the evictable one
    assert {e.key: e.pinned for e in cache.entries()} == {b: False, c: True}
    cache.set_pinned([])
    assert not any(e.pinned for e in cache.entries())
    with pytest.raises(TypeError):
        cache.set_pinned(a)


def test_bound_applied_on_open(cache_dir: Path, open_cache: Callable[..., PhraseCache]) -> None:
    cache = open_cache()
    keys = [key_for(str(i)) for i in range(4)]
    for i, key in enumerate(keys):
        store(cache, key, pcm_for(i))
    cache.close()
    smaller = open_cache(max_bytes=2 * SIZE)
    assert [e.key for e in smaller.entries()] == [keys[3], keys[2]]
    assert files(cache_dir) == {f"{keys[3]}.wav", f"{keys[2]}.wav"}


def test_purge_and_remove(cache_dir: Path, open_cache: Callable[..., PhraseCache]) -> None:
    cache = open_cache()
    a, b, c = key_for("a"), key_for("b"), key_for("c")
    for i, key in enumerate((a, b, c)):
        store(cache, key, pcm_for(i))
    cache.set_pinned([a])
    assert cache.remove(b) is True
    assert cache.remove(b) is False
    assert files(cache_dir) == {f"{a}.wav", f"{c}.wav"}
    assert cache.purge(unpinned_only=True) == 1
    assert [e.key for e in cache.entries()] == [a]
    assert cache.purge() == 1
    assert cache.entries() == [] and files(cache_dir) == set() and cache.total_bytes() == 0
    assert store(cache, a, pcm_for(0)).pinned  # the pin set survives a purge
