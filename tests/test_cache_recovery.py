"""The phrase cache after crashes (real SIGKILLs), beside another process, and degraded: an
unopenable directory or index, a corrupt index."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgespeak.sources.cache import PhraseCache
from harness.stack import clean_env
from tests.cache_support import (
    OLD,
    RATE,
    ROOT,
    files,
    index_rows,
    key_for,
    opener,
    pcm_for,
    store,
)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def open_cache(cache_dir: Path) -> Iterator[Callable[..., PhraseCache]]:
    with opener(cache_dir) as make:
        yield make


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
