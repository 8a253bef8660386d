"""The phrase cache on a real filesystem with real sqlite: writing, reading, bad entries."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import subprocess
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgespeak.base.pcm import wav_header
from edgespeak.sources.cache import CachedPhrase, PhraseCache
from harness.stack import capture_alsa_conf, clean_env
from tests.cache_support import RATE, files, index_rows, key_for, opener, pcm_for, store


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def open_cache(cache_dir: Path) -> Iterator[Callable[..., PhraseCache]]:
    with opener(cache_dir) as make:
        yield make


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


def test_a_hit_can_be_recorded_after_the_read(
    cache_dir: Path, open_cache: Callable[..., PhraseCache]
) -> None:
    """A player reads first and records the hit once the audio plays; a hit of an entry stored
    again meanwhile does not count for the new one."""
    cache = open_cache()
    key = key_for("Front door open")
    store(cache, key, pcm_for(1))
    phrase = cache.get(key, record_hit=False)
    assert phrase is not None and phrase.pcm == pcm_for(1)
    assert cache.entries()[0].hits == 0
    cache.record_hit(phrase)
    (entry,) = cache.entries()
    assert entry.hits == 1 and entry.last_used >= entry.created == phrase.created
    assert cache.remove(key)
    store(cache, key, pcm_for(2))
    cache.record_hit(phrase)  # the entry it was read from is gone
    assert cache.entries()[0].hits == 0
    cache.close()
    cache.record_hit(phrase)  # unusable: nothing, no error


def test_found_is_told_once_the_index_has_the_key_before_the_file_is_checked(
    cache_dir: Path, open_cache: Callable[..., PhraseCache]
) -> None:
    """A player gets ready while the file is read: told for an indexed key, even one whose
    file then fails its check (a miss after all), and not for an unknown key."""
    cache = open_cache()
    found: list[str] = []
    key = key_for("Doorbell")
    store(cache, key, pcm_for(3))
    assert cache.get("0" * 64, found=lambda: found.append("unknown")) is None
    assert found == []
    phrase = cache.get(key, found=lambda: found.append("doorbell"))
    assert phrase is not None and found == ["doorbell"]
    _truncate(cache_dir / f"{key}.wav")
    assert cache.get(key, found=lambda: found.append("damaged")) is None
    assert found == ["doorbell", "damaged"]


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
