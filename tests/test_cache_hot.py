"""A phrase said again is read on the event loop without waiting for a disk, from the file kept
open since it was last read, and only when that is safe: real files, real sqlite, the real
page cache (evicted with ``posix_fadvise``), a real event loop."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from edgespeak.audio.alsa import AlsaSink
from edgespeak.base.announcement import Announcement
from edgespeak.base.pcm import FRAME_BYTES, WAV_HEADER_BYTES, wav_header
from edgespeak.config import Settings
from edgespeak.providers.fish_request import announcement_request
from edgespeak.sources.cache import CachedPhrase, Entry, PhraseCache, phrase_key
from edgespeak.sources.cache.hot import KEPT
from edgespeak.speaking.lookup import CacheLookup
from tests.cache_support import RATE, key_for, pcm_for, store

ENDPOINT = "ws://127.0.0.1:9/v1/tts/live"


class NotingCache(PhraseCache):
    """A real PhraseCache that notes which thread read the index, and which read the audio."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.index_reads: list[int] = []
        self.reads_now: list[int] = []

    def _entry(self, key: str) -> Entry | None:
        self.index_reads.append(threading.get_ident())
        return super()._entry(key)

    def get_now(self, key: str) -> CachedPhrase | None:
        self.reads_now.append(threading.get_ident())
        return super().get_now(key)


def wav_of(cache: PhraseCache, key: str) -> Path:
    return cache.dir / f"{key}.wav"


def fds_into(directory: Path) -> int:
    """How many of this process's descriptors are open on a file in ``directory``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the descriptor listdir itself used, closed by now
            continue
        count += target.startswith(f"{directory}/") and target.endswith(".wav")
    return count


def evict_pages(path: Path) -> None:
    """Drop ``path``'s pages from the page cache (written back first: dirty pages stay)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_a_phrase_read_lately_is_read_again_without_the_index(tmp_path: Path) -> None:
    pcm = pcm_for(1)
    with NotingCache(tmp_path / "cache") as cache:
        key = key_for("Front door open.")
        entry = store(cache, key, pcm)
        assert cache.get_now(key) is None, "never read: its row is not known without the index"
        first = cache.get(key, record_hit=False)
        assert first is not None and len(cache.index_reads) == 1
        again = cache.get_now(key)
        assert again == CachedPhrase(key, pcm, RATE, entry.created)
        assert len(cache.index_reads) == 1, "read without asking the index"
        assert cache.get_now(key_for("Back door open.")) is None


def test_a_phrase_whose_pages_left_the_page_cache_is_read_in_a_thread_again(
    tmp_path: Path,
) -> None:
    pcm = pcm_for(2, frames=40_000)  # 80 kB: many pages
    with PhraseCache(tmp_path / "cache") as cache:
        key = key_for("Garage open.")
        store(cache, key, pcm)
        assert cache.get(key) is not None
        evict_pages(wav_of(cache, key))
        assert cache.get_now(key) is None, "reading it now would wait for the disk"
        phrase = cache.get(key)  # the thread's read brings the pages back
        assert phrase is not None and phrase.pcm == pcm
        now = cache.get_now(key)
        assert now is not None and now.pcm == pcm


def test_a_removed_or_replaced_file_is_not_read_from_its_kept_descriptor(tmp_path: Path) -> None:
    with PhraseCache(tmp_path / "cache") as cache:
        gone, swapped = key_for("Window open."), key_for("Door locked.")
        store(cache, gone, pcm_for(3))
        store(cache, swapped, pcm_for(4))
        assert cache.get(gone) is not None and cache.get(swapped) is not None
        assert fds_into(cache.dir) == 2
        assert cache.remove(gone)
        assert cache.get_now(gone) is None, "removed: its old inode is not played"
        other = pcm_for(5)  # same length: only the link count tells the files apart
        tmp = cache.dir / "replacement.tmp"
        tmp.write_bytes(wav_header(RATE, data_bytes=len(other)) + other)
        os.replace(tmp, wav_of(cache, swapped))
        assert cache.get_now(swapped) is None, "replaced: the old file is not played"
        assert fds_into(cache.dir) == 0, "both descriptors closed: the disk space is freed"
        assert cache.get(swapped) is None, "the new file does not match its row: dropped"


def test_a_file_damaged_in_place_is_not_played_and_its_entry_is_dropped(tmp_path: Path) -> None:
    with PhraseCache(tmp_path / "cache") as cache:
        key = key_for("Smoke in the kitchen.")
        store(cache, key, pcm_for(6))
        assert cache.get(key) is not None
        with open(wav_of(cache, key), "r+b") as file:  # same inode, same size
            file.seek(WAV_HEADER_BYTES + 10 * FRAME_BYTES)
            file.write(b"\x55\x55")
        assert cache.get_now(key) is None, "the sha256 check runs on every read"
        assert cache.get(key) is None and not cache.has(key), "the thread's read drops it"
        assert fds_into(cache.dir) == 0


def test_only_the_phrases_read_last_are_kept_open(tmp_path: Path) -> None:
    keys = [key_for(f"Phrase {n}.") for n in range(KEPT + 2)]
    with PhraseCache(tmp_path / "cache") as cache:
        for n, key in enumerate(keys):
            store(cache, key, pcm_for(n, frames=100))
            assert cache.get(key) is not None
        assert fds_into(cache.dir) == KEPT
        assert [cache.get_now(key) is not None for key in keys[:3]] == [False, False, True]
        cache.close()
        assert fds_into(cache.dir) == 0
        assert cache.get_now(keys[-1]) is None


async def test_a_lookup_of_a_phrase_said_again_starts_and_ends_on_the_loop(
    tmp_path: Path,
) -> None:
    settings = Settings(tts={"url": ENDPOINT})
    ann = Announcement("Front door open.")
    key = phrase_key(settings, ENDPOINT, ann.text, request=announcement_request(settings, ann))
    pcm = pcm_for(7)
    sink = AlsaSink("default")
    with NotingCache(tmp_path / "cache") as cache:
        store(cache, key, pcm, text=ann.text)
        lookup = CacheLookup(settings, ENDPOINT, cache, sink)
        try:
            first = Announcement(ann.text)  # a new announcement each time, as from MQTT
            lookup.start(first)
            assert (await lookup.result(first, prime=False))[2] is not None
            assert cache.index_reads and cache.index_reads[-1] != threading.get_ident()
            index_reads = len(cache.index_reads)
            again = Announcement(ann.text)
            lookup.start(again)
            assert cache.reads_now[-1] == threading.get_ident(), "looked up on the loop"
            _, got, hit = await lookup.result(again, prime=False)
            assert (got, hit is not None and hit.pcm) == (key, pcm)
            assert len(cache.index_reads) == index_reads, "no thread asked the index"
        finally:
            lookup.forget()
            sink.close()
