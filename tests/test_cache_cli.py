"""``edgespeak cache list | warm | verify | purge`` as subprocesses against the real server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from edgespeak.sources.cache import PhraseCache
from harness.stack import edgespeak_command
from tests.conftest import TtsServer, base_env
from tests.helpers import server_audio

DOOR = "Someone is at the front door."
SMOKE = "Smoke detected in the kitchen."
EXTRA = "The post has arrived."


def write_config(path: Path, url: str, cache_dir: Path) -> Path:
    path.write_text(
        f'[tts]\nurl = "{url}"\nsample_rate = 22050\n'
        f'[cache]\ndir = "{cache_dir}"\nphrases = ["{DOOR}", {{ text = "{SMOKE}" }}]\n'
    )
    return path


async def cache_cmd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = edgespeak_command("cache", *args, "--config", str(config))
    return await asyncio.to_thread(
        subprocess.run, cmd, capture_output=True, text=True, env=base_env(), timeout=60
    )


async def test_warm_list_verify_purge(tts_server: TtsServer, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    config = write_config(tmp_path / "config.toml", tts_server.url, cache_dir)

    warm = await cache_cmd(config, "warm", EXTRA)
    assert warm.returncode == 0, warm.stderr
    assert "3/3" in warm.stderr  # the progress bar reached the end
    assert "0 failed" in warm.stdout
    with PhraseCache(cache_dir) as cache:
        by_text = {e.text: e for e in cache.entries()}
        assert set(by_text) == {DOOR, SMOKE, EXTRA}
        assert by_text[DOOR].pinned and by_text[SMOKE].pinned and not by_text[EXTRA].pinned
        door = cache.get(by_text[DOOR].key)
        assert door is not None
    assert door.pcm == await server_audio(tts_server.url, DOOR, fmt="pcm", rate=22050)

    listing = await cache_cmd(config, "list")
    assert listing.returncode == 0, listing.stderr
    assert "3 entries (2 pinned)" in listing.stdout
    assert "KiB" in listing.stdout and "of 100.0 MiB" in listing.stdout
    assert DOOR in listing.stdout

    wav = cache_dir / f"{by_text[SMOKE].key}.wav"
    wav.write_bytes(wav.read_bytes()[:-100])
    verify = await cache_cmd(config, "verify")
    assert verify.returncode == 1
    assert "2 of 3 entries good, 1 dropped" in verify.stdout
    assert f"dropped {SMOKE!r}: file is" in verify.stdout

    # Warming again restores the damaged pinned phrase, and only that one.
    again = await cache_cmd(config, "warm")
    assert again.returncode == 0, again.stderr
    with PhraseCache(cache_dir) as cache:
        assert {e.text for e in cache.entries()} == {DOOR, SMOKE, EXTRA}
        assert cache.verify(by_text[SMOKE].key) is None

    purge = await cache_cmd(config, "purge", "--unpinned")
    assert purge.returncode == 0, purge.stderr
    assert purge.stdout.startswith("removed 1 entries")
    with PhraseCache(cache_dir) as cache:
        assert {e.text for e in cache.entries()} == {DOOR, SMOKE}
    purge_all = await cache_cmd(config, "purge")
    assert purge_all.stdout.startswith("removed 2 entries")


async def test_warm_with_the_provider_down_fails_with_exit_1(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", "ws://127.0.0.1:9/v1/tts/live", tmp_path)
    warm = await cache_cmd(config, "warm")
    assert warm.returncode == 1
    assert "2 failed" in warm.stdout
    assert f"failed: {DOOR!r}: cannot connect" in warm.stdout
    with PhraseCache(tmp_path) as cache:
        assert cache.entries() == []


def test_cache_list_loads_neither_alsaaudio_nor_numpy(tmp_path: Path) -> None:
    """``edgespeak cache list`` stays light on a Pi Zero: importing the phrase cache and the
    cache commands, and running ``list``, loads neither alsaaudio nor numpy."""
    config = write_config(tmp_path / "config.toml", "ws://127.0.0.1:1/v1/tts/live", tmp_path)
    code = (
        "import sys\n"
        "import edgespeak.cli.cache, edgespeak.sources.cache\n"
        "from edgespeak.cli.main import main\n"
        "status = main(['cache', 'list', '--config', sys.argv[1]])\n"
        "heavy = sorted({'alsaaudio', 'numpy'} & set(sys.modules))\n"
        "assert status == 0 and not heavy, (status, heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(config)],
        capture_output=True, text=True, env=base_env(), timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "0 entries (0 pinned)" in done.stdout
