"""The phrase cache on a real filesystem with real sqlite; crashes are real SIGKILLs."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import wave
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from edgespeak.base.pcm import wav_header
from edgespeak.sources.cache import (
    CachedPhrase,
    Entry,
    PhraseCache,
    cache_key,
    normalise_text,
)
from harness.stack import capture_alsa_conf, clean_env

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


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def open_cache(cache_dir: Path) -> Iterator[Callable[..., PhraseCache]]:
    opened: list[PhraseCache] = []

    def make(max_bytes: int | None = None) -> PhraseCache:
        cache = PhraseCache(cache_dir, max_bytes=max_bytes)
        opened.append(cache)
        return cache

    yield make
    for cache in opened:
        cache.close()


# -- keys -----------------------------------------------------------------------------------


def test_normalise_text_folds_whitespace_and_keeps_case() -> None:
    assert normalise_text("  Hello,\t\n  World \u00a0 again ") == "Hello, World again"


def test_cache_key_folds_whitespace_only() -> None:
    base = key_for("The door is open.")
    assert len(base) == 64 and int(base, 16) >= 0
    assert key_for("  The   door\nis open. ") == base
    assert key_for("The door is open.", prosody={}) == base  # empty prosody = none
    changed = [
        key_for("the door is open."),
        key_for("The door is open", voice=None),
        key_for("The door is open.", voice="alice"),
        key_for("The door is open.", format="opus"),
        key_for("The door is open.", sample_rate=24000),
        key_for("The door is open.", sample_rate=None),
        key_for("The door is open.", prosody={"speed": 1.2}),
        key_for("The door is open.", endpoint="wss://api.fish.audio/v1/tts/live"),
        key_for("The door is open.", model="s2"),
        key_for("The door is open.", provider="other"),
    ]
    assert base not in changed
    assert len(set(changed)) == len(changed)
    # prosody is canonical: key order does not matter, values do
    assert key_for("x", prosody={"a": 1, "b": 2}) == key_for("x", prosody={"b": 2, "a": 1})
    assert key_for("x", prosody={"a": 1}) != key_for("x", prosody={"a": 2})


# -- round trip -----------------------------------------------------------------------------


def test_write_commit_get_round_trip(
    cache_dir: Path, open_cache: Callable[..., PhraseCache]
) -> None:
    cache = open_cache()
    assert cache.usable
    key = key_for("Front door open")
    pcm = pcm_for(1, frames=5000)
    writer = cache.writer(key, RATE, text="  Front   door open ", voice="alice")
    assert writer is not None
    tmp = [name for name in files(cache_dir) if name.endswith(".tmp")]
    assert len(tmp) == 1 and tmp[0].startswith(".")
    assert not cache.has(key) and cache.get(key) is None  # nothing before commit
    for start in range(0, len(pcm), 777):  # odd sizes: samples split across writes
        writer.write(pcm[start : start + 777])
    entry = writer.commit()
    assert entry is not None
    assert (entry.key, entry.text, entry.voice) == (key, "Front door open", "alice")
    assert (entry.rate_hz, entry.frames, entry.size_bytes) == (RATE, 5000, 44 + 10000)
    assert entry.sha256 == hashlib.sha256(pcm).hexdigest()
    assert entry.hits == 0 and not entry.pinned
    assert entry.duration_s == pytest.approx(5000 / RATE)
    assert files(cache_dir) == {f"{key}.wav"}  # temporary file renamed

    path = cache_dir / f"{key}.wav"
    assert path.stat().st_size == entry.size_bytes
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, RATE)
        assert wav.getnframes() == 5000
        assert wav.readframes(5000) == pcm
    assert path.read_bytes()[:44] == wav_header(RATE, data_bytes=5000 * 2)
    assert index_rows(cache_dir) == {key: ("Front door open", "alice", 10044, 0, 0)}

    phrase = cache.get(key)
    assert phrase is not None
    assert (phrase.key, phrase.pcm, phrase.rate_hz, phrase.frames) == (key, pcm, RATE, 5000)
    assert cache.get(key) is not None
    assert index_rows(cache_dir)[key][3] == 2  # hits
    (stored,) = cache.entries()
    assert stored.hits == 2 and stored.last_used >= stored.created
    assert cache.total_bytes() == 10044
    assert cache.verify(key) is None
    assert cache.entries()[0].hits == 2  # verify records no hit
    assert cache.has(key)


def test_header_is_what_the_wave_module_writes() -> None:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(22050)
        wav.writeframes(pcm_for(3, frames=123))
    assert out.getvalue()[:44] == wav_header(22050, data_bytes=123 * 2)


def test_stored_file_plays_with_aplay(tmp_path: Path, cache_dir: Path) -> None:
    cache = PhraseCache(cache_dir)
    key = key_for("aplay")
    pcm = pcm_for(4, frames=8000)
    store(cache, key, pcm)
    captured = tmp_path / "captured.raw"
    env = clean_env(**capture_alsa_conf(tmp_path / "asound.conf", captured))
    subprocess.run(["aplay", "-q", str(cache_dir / f"{key}.wav")], env=env, check=True, timeout=30)
    assert captured.read_bytes() == pcm
    cache.close()


def test_chunks_slice_the_pcm() -> None:
    pcm = pcm_for(5, frames=10)
    phrase = CachedPhrase("k", pcm, RATE)
    chunks = list(phrase.chunks(4))
    assert [len(c) for c in chunks] == [8, 8, 4]
    assert b"".join(chunks) == pcm
    assert phrase.duration_s == pytest.approx(10 / RATE)
    with pytest.raises(ValueError):
        list(phrase.chunks(0))


def test_empty_writer_stores_nothing(
    cache_dir: Path, open_cache: Callable[..., PhraseCache]
) -> None:
    cache = open_cache()
    key = key_for("silence")
    writer = cache.writer(key, RATE, text="silence", voice=None)
    assert writer is not None
    writer.write(b"")
    writer.write(b"\x01")  # half a sample is no audio
    assert writer.commit() is None
    assert files(cache_dir) == set()
    assert not cache.has(key) and cache.entries() == []


def test_discard_leaves_no_files(cache_dir: Path, open_cache: Callable[..., PhraseCache]) -> None:
    cache = open_cache()
    key = key_for("discarded")
    writer = cache.writer(key, RATE, text="discarded", voice=None)
    assert writer is not None
    writer.write(pcm_for(6))
    writer.discard()
    writer.discard()  # harmless twice
    assert files(cache_dir) == set()
    assert not cache.has(key)
    with pytest.raises(OSError):
        writer.write(pcm_for(6))
    with pytest.raises(OSError):
        writer.commit()


def test_second_writer_for_a_stored_key_keeps_the_first(
    cache_dir: Path, open_cache: Callable[..., PhraseCache]
) -> None:
    cache = open_cache()
    key = key_for("race")
    first, second = (cache.writer(key, RATE, text="race", voice=None) for _ in range(2))
    assert first is not None and second is not None
    first.write(pcm_for(7))
    second.write(pcm_for(8))
    stored = first.commit()
    again = second.commit()
    assert again == stored
    assert files(cache_dir) == {f"{key}.wav"}
    phrase = cache.get(key)
    assert phrase is not None and phrase.pcm == pcm_for(7)


def test_failed_commit_raises_oserror_and_leaves_nothing(
    cache_dir: Path, open_cache: Callable[..., PhraseCache]
) -> None:
    cache = open_cache()
    key = key_for("blocked")
    blocker = cache_dir / f"{key}.wav"
    blocker.mkdir()
    (blocker / "x").write_bytes(b"x")  # the rename onto a non-empty directory fails
    writer = cache.writer(key, RATE, text="blocked", voice=None)
    assert writer is not None
    writer.write(pcm_for(9))
    with pytest.raises(OSError):
        writer.commit()
    assert not cache.has(key) and cache.entries() == []
    assert files(cache_dir) == {f"{key}.wav"}  # only the blocker: no temporary file left
    blocker.joinpath("x").unlink()
    blocker.rmdir()
    store(cache, key, pcm_for(9))  # the index was not left in a transaction
    assert cache.get(key) is not None


def test_closed_cache_writer_commit_raises_oserror(
    cache_dir: Path, open_cache: Callable[..., PhraseCache]
) -> None:
    cache = open_cache()
    writer = cache.writer(key_for("closed"), RATE, text="closed", voice=None)
    assert writer is not None
    writer.write(pcm_for(10))
    cache.close()
    with pytest.raises(OSError):
        writer.commit()
    assert files(cache_dir) == set()
    assert not cache.usable and cache.get(key_for("closed")) is None


def test_writer_rejects_bad_keys(open_cache: Callable[..., PhraseCache]) -> None:
    cache = open_cache()
    for bad in ("../escape", "ABC", "a" * 63, "A" * 64):
        with pytest.raises(ValueError):
            cache.writer(bad, RATE, text="x", voice=None)
        assert cache.get(bad) is None and not cache.has(bad) and not cache.remove(bad)


# -- bad entries ----------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def _flip_sample(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[44 + 500] ^= 0xFF
    path.write_bytes(bytes(data))


def _other_rate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(wav_header(RATE * 2, data_bytes=len(data) - 44) + data[44:])


def _missing(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_truncate, "bytes, expected"),
        (_empty, "zero-length"),
        (_garbage, "not a WAV"),
        (_flip_sample, "checksum"),
        (_other_rate, "rate"),
        (_missing, "missing"),
    ],
)
def test_bad_entry_is_dropped_and_rewritten(
    cache_dir: Path,
    open_cache: Callable[..., PhraseCache],
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[Path], None],
    reason: str,
) -> None:
    cache = open_cache()
    key = key_for("damaged")
    pcm = pcm_for(11)
    store(cache, key, pcm)
    damage(cache_dir / f"{key}.wav")
    with caplog.at_level(logging.WARNING, logger="edgespeak.sources.cache"):
        assert cache.get(key) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(key in m and reason in m for m in warnings), warnings
    assert not cache.has(key)
    assert key not in index_rows(cache_dir)
    assert files(cache_dir) == set()

    store(cache, key, pcm)
    phrase = cache.get(key)
    assert phrase is not None and phrase.pcm == pcm


def test_verify_reports_and_drops_without_a_hit(
    cache_dir: Path, open_cache: Callable[..., PhraseCache]
) -> None:
    cache = open_cache()
    good, bad = key_for("good"), key_for("bad")
    store(cache, good, pcm_for(12))
    store(cache, bad, pcm_for(13))
    _flip_sample(cache_dir / f"{bad}.wav")
    assert cache.verify(good) is None
    reason = cache.verify(bad)
    assert reason is not None and "checksum" in reason
    assert cache.verify(bad) == "not in cache"
    assert [e.key for e in cache.entries()] == [good]
    assert cache.entries()[0].hits == 0


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


# -- reconciliation and processes -----------------------------------------------------------


def test_reconcile_on_open(cache_dir: Path, open_cache: Callable[..., PhraseCache]) -> None:
    cache = open_cache()
    kept, lost, orphan = key_for("kept"), key_for("lost"), key_for("orphan")
    store(cache, kept, pcm_for(1))
    store(cache, lost, pcm_for(2))
    store(cache, orphan, pcm_for(3))
    cache.close()
    (cache_dir / f"{lost}.wav").unlink()  # row without file
    conn = sqlite3.connect(cache_dir / "index.sqlite3")
    with conn:
        conn.execute("DELETE FROM entries WHERE key = ?", (orphan,))  # file without row
    conn.close()
    stale, young = cache_dir / ".stale.abc.tmp", cache_dir / ".young.def.tmp"
    stale.write_bytes(b"partial")
    young.write_bytes(b"partial")
    past = time.time() - OLD
    os.utime(stale, (past, past))
    (cache_dir / "notes.txt").write_text("not ours")

    reopened = open_cache()
    assert files(cache_dir) == {f"{kept}.wav", young.name, "notes.txt"}
    assert [e.key for e in reopened.entries()] == [kept]
    assert reopened.get(kept) is not None


def test_two_instances_share_entries_and_pins(cache_dir: Path) -> None:
    daemon, cli = PhraseCache(cache_dir), PhraseCache(cache_dir)
    a, b = key_for("a"), key_for("b")
    store(daemon, a, pcm_for(1))
    phrase = cli.get(a)
    assert phrase is not None and phrase.pcm == pcm_for(1)
    cli.set_pinned([a, b])
    assert daemon.entries()[0].pinned
    assert store(daemon, b, pcm_for(2)).pinned  # pin set by the other instance
    assert cli.remove(a)
    assert daemon.get(a) is None and not daemon.has(a)
    assert daemon.entries()[0].hits == 0 and cli.entries()[0].key == b
    daemon.close()
    cli.close()


def _child(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        env=clean_env(PYTHONPATH=str(ROOT)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL


CHILD_HEAD = """
import sys
from pathlib import Path
from edgespeak.sources.cache import PhraseCache
cache = PhraseCache(Path(sys.argv[1]))
assert cache.usable
writer = cache.writer(sys.argv[2], 16000, text="crash", voice=None)
writer.write(b"\\x01\\x02" * 4000)
"""


def _make_old(directory: Path, suffix: str) -> None:
    past = time.time() - OLD
    for path in directory.glob(f"*{suffix}"):
        os.utime(path, (past, past))


def test_sigkill_mid_write_leaves_no_entry(cache_dir: Path) -> None:
    key = key_for("killed mid-write")
    child = _child(
        CHILD_HEAD + "print('ready', flush=True)\nsys.stdin.readline()\n", str(cache_dir), key
    )
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    _kill(child)
    assert [p.name for p in cache_dir.glob(".*.tmp")] != []

    cache = PhraseCache(cache_dir)
    assert cache.get(key) is None and not cache.has(key) and cache.entries() == []
    assert len(list(cache_dir.glob(".*.tmp"))) == 1  # young: may belong to a live writer
    cache.close()
    _make_old(cache_dir, ".tmp")
    cache = PhraseCache(cache_dir)
    assert files(cache_dir) == set()
    store(cache, key, pcm_for(1))
    assert cache.get(key) is not None
    cache.close()


def test_sigkill_inside_commit_waiting_for_the_index_leaves_no_entry(cache_dir: Path) -> None:
    key = key_for("killed in commit")
    script = CHILD_HEAD + (
        "print('ready', flush=True)\nsys.stdin.readline()\n"
        "print('committing', flush=True)\nwriter.commit()\nprint('committed', flush=True)\n"
    )
    child = _child(script, str(cache_dir), key)
    assert child.stdin is not None and child.stdout is not None
    assert child.stdout.readline() == "ready\n"
    holder = sqlite3.connect(cache_dir / "index.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the child's commit cannot get past BEGIN IMMEDIATE
    child.stdin.write("go\n")
    child.stdin.flush()
    assert child.stdout.readline() == "committing\n"
    _kill(child)
    holder.execute("ROLLBACK")
    holder.close()

    assert not (cache_dir / f"{key}.wav").exists()
    assert key not in index_rows(cache_dir)
    _make_old(cache_dir, ".tmp")
    cache = PhraseCache(cache_dir)
    assert cache.get(key) is None and not cache.has(key)
    assert files(cache_dir) == set()
    cache.close()


def test_sigkill_between_rename_and_commit_leaves_no_entry(cache_dir: Path) -> None:
    """The child's own os.replace is wrapped (in the child only, not in edgespeak) to stop
    right after the real rename, inside the index transaction, where it is killed."""
    key = key_for("killed after rename")
    script = (
        (
            "import os, sys\n"
            "real_replace = os.replace\n"
            "def replace_then_wait(src, dst):\n"
            "    real_replace(src, dst)\n"
            "    print('renamed', flush=True)\n"
            "    sys.stdin.readline()\n"
            "os.replace = replace_then_wait\n"
        )
        + CHILD_HEAD
        + "writer.commit()\nprint('committed', flush=True)\n"
    )
    child = _child(script, str(cache_dir), key)
    assert child.stdout is not None and child.stdout.readline() == "renamed\n"
    _kill(child)
    assert (cache_dir / f"{key}.wav").exists()  # the rename happened…
    assert key not in index_rows(cache_dir)  # …but the row was never committed

    cache = PhraseCache(cache_dir)
    assert cache.get(key) is None and not cache.has(key)
    assert files(cache_dir) == set()  # the orphan was removed at open
    store(cache, key, pcm_for(2))
    assert cache.get(key) is not None
    cache.close()


def test_entry_committed_by_another_process(cache_dir: Path) -> None:
    key = key_for("from the child")
    cache = PhraseCache(cache_dir)
    cache.set_pinned([key])
    child = _child(CHILD_HEAD + "print(writer.commit().pinned)\n", str(cache_dir), key)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0 and out == "True\n"
    phrase = cache.get(key)
    assert phrase is not None and phrase.pcm == b"\x01\x02" * 4000 and phrase.rate_hz == 16000
    cache.close()


# -- degraded -------------------------------------------------------------------------------


def test_unopenable_directory_is_an_empty_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("a file, not a directory")  # fails for root too, unlike chmod
    with caplog.at_level(logging.WARNING, logger="edgespeak.sources.cache"):
        cache = PhraseCache(blocker / "cache", max_bytes=1000)
    assert not cache.usable
    assert any("disabled" in r.getMessage() for r in caplog.records)
    key = key_for("x")
    assert cache.get(key) is None
    assert cache.writer(key, RATE, text="x", voice=None) is None
    assert not cache.has(key)
    assert cache.entries() == [] and cache.total_bytes() == 0
    assert cache.purge() == 0 and not cache.remove(key)
    assert cache.verify(key) == "cache unusable"
    cache.set_pinned([key])
    cache.close()


def test_index_that_cannot_be_opened_is_left_alone(
    cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (cache_dir / "index.sqlite3").mkdir(parents=True)  # not a file sqlite can open
    with caplog.at_level(logging.WARNING, logger="edgespeak.sources.cache"):
        cache = PhraseCache(cache_dir)
    assert not cache.usable
    assert any("disabled" in r.getMessage() for r in caplog.records)
    assert (cache_dir / "index.sqlite3").is_dir()
    assert cache.get(key_for("x")) is None and cache.entries() == []


def test_corrupt_index_is_replaced(cache_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = PhraseCache(cache_dir)
    key = key_for("before corruption")
    store(cache, key, pcm_for(1))
    cache.close()
    garbage = os.urandom(8192)
    (cache_dir / "index.sqlite3").write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="edgespeak.sources.cache"):
        cache = PhraseCache(cache_dir)
    assert cache.usable
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    assert cache.entries() == [] and cache.get(key) is None
    assert not (cache_dir / f"{key}.wav").exists()  # its row is gone: orphan removed
    assert (cache_dir / "index.sqlite3.corrupt").read_bytes() == garbage
    store(cache, key, pcm_for(1))
    assert cache.get(key) is not None
    cache.close()
