"""The daemon with Piper, end to end (real Mosquitto, ``edgespeak serve``, daemon, ALSA file
capture): through the local server on Piper; the fallback speaking with a Piper worker process
when the server is killed; pinned phrases rendered with Piper while the provider is away and
replayed byte for byte from the cache, with live fallback on espeak-ng when Piper is too slow.
Piper never enters the daemon's own process."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edgespeak.sources.cache import PhraseCache
from harness.stack import free_port
from tests.asr import heard
from tests.conftest import Stack, TtsServer, daemon_process, logged
from tests.helpers import espeak_pcm
from tests.test_piper_server import JOE, copy_voice

DOOR = "Someone is at the front door."
DINNER = "Dinner is ready. And this is the end."  # heard well by the recogniser


def piper_config(stack: Stack, *, live_max_rtf: float = 0.5, **options: object) -> Path:
    """The stack's daemon config with ``[fallback] voice`` the Piper voice."""
    path = stack.config(**options)  # type: ignore[arg-type]
    with path.open("a") as f:
        f.write(f'voice = "{JOE}"\nlive_max_rtf = {live_max_rtf}\n')  # into [fallback], last
    return path


def mapped(pid: int, library: str) -> bool:
    """Whether process ``pid`` has a file whose path contains ``library`` mapped."""
    return library in Path(f"/proc/{pid}/maps").read_text()


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def test_daemon_speaks_through_the_server_on_piper_and_replays_from_the_cache(
    stack: Stack, tmp_path: Path
) -> None:
    piper_server = TtsServer(free_port(), tmp_path / "piper", voice=JOE)
    piper_server.workdir.mkdir()
    piper_server.start()
    try:
        async with stack.daemon(stack.config(tts_url=piper_server.url)) as w:
            first = await w.say(DOOR, "door-1")
            spoken = stack.capture.read()
            again = await w.say(DOOR, "door-2")
    finally:
        piper_server.stop()
    assert (first["state"], first["source"], first["engine"]) == ("finished", "stream", "fish")
    assert "voice" not in first  # the server's default voice, asked for by no id
    heard(spoken, 22050, DOOR)
    assert (again["source"], again["engine"]) == ("cache", "fish")
    assert stack.capture.read()[len(spoken) :] == spoken  # byte for byte from the cache
    # Without a Piper fallback, the daemon starts no worker and never maps onnxruntime.
    assert not (stack.workdir / "daemon.log").read_text().count("Piper voice")


async def test_the_fallback_speaks_with_piper_when_the_server_is_killed(stack: Stack) -> None:
    # live_max_rtf high: Piper speaks live even when other work here slows its measurement.
    async with stack.daemon(piper_config(stack, live_max_rtf=100.0)) as w:
        await logged(stack.daemon_log, f"Piper voice {JOE} ready in a worker process")
        stack.tts.stop()
        down = await w.say(DINNER, "dinner-1")
    assert (down["state"], down["source"]) == ("finished", "fallback"), down
    assert (down["engine"], down["voice"]) == ("piper", JOE)
    assert "cannot connect" in down["reason"]
    heard(stack.capture.read(), 22050, DINNER)


async def test_piper_lives_in_a_worker_process_not_in_the_daemon(stack: Stack) -> None:
    with daemon_process(piper_config(stack), stack.capture, stack.workdir) as proc:
        await logged(stack.daemon_log, f"Piper voice {JOE} ready in a worker process")
        workers = children(proc.pid)
        assert len(workers) == 1
        assert mapped(workers[0], "onnxruntime") and not mapped(proc.pid, "onnxruntime")
        assert not mapped(proc.pid, "espeakbridge")


async def test_pinned_phrase_rendered_with_piper_replays_byte_identical_from_the_cache(
    stack: Stack,
) -> None:
    stack.tts.stop()  # the provider is away from the start: Piper renders the pinned phrase
    config = piper_config(stack, phrases=(DOOR,), live_max_rtf=0.0)  # live: never Piper
    async with stack.daemon(config) as w:
        await logged(stack.daemon_log, "(1 rendered by the Piper fallback voice)")
        door = await w.say(DOOR, "door-1")
        first = stack.capture.read()
        again = await w.say(DOOR, "door-2")
        second = stack.capture.read()[len(first) :]
        live = await w.say(DINNER, "dinner-1")
        dinner = stack.capture.read()[len(first) + len(second) :]
    for event in (door, again):
        assert (event["state"], event["source"]) == ("finished", "cache"), event
        assert (event["engine"], event["voice"]) == ("piper", JOE)
    entry = next(e for e in PhraseCache(stack.cache_dir).entries() if e.text == DOOR)
    assert entry.pinned and entry.voice == JOE
    stored = (stack.cache_dir / f"{entry.key}.wav").read_bytes()[44:]
    assert first == second == stored
    heard(first, 22050, DOOR)
    # Uncached text with Piper too slow (live_max_rtf 0): espeak-ng in Piper's language, at once.
    assert (live["source"], live["engine"], live["voice"]) == ("fallback", "espeak-ng", "en-us")
    assert dinner == espeak_pcm(DINNER, "en-us")


async def test_the_providers_rendering_replaces_pipers_when_it_is_back(stack: Stack) -> None:
    stack.tts.stop()
    async with stack.daemon(piper_config(stack, phrases=(DOOR,))) as w:
        await logged(stack.daemon_log, "(1 rendered by the Piper fallback voice)")
        stack.tts.start()
        await logged(stack.daemon_log, "phrase cache: 1 of 1 pinned phrases ready\n")
        back = await w.say(DOOR, "door-back")
    assert (back["source"], back["engine"]) == ("cache", "fish"), back
    assert "voice" not in back
    entry = next(e for e in PhraseCache(stack.cache_dir).entries() if e.text == DOOR)
    assert entry.voice is None and entry.pinned
    assert stack.capture.read() == await asyncio.wait_for(stack.sent(DOOR), 30)


async def test_a_corrupt_fallback_voice_is_logged_at_start_and_espeak_ng_speaks(
    stack: Stack,
) -> None:
    voices = stack.workdir / "voices"
    model, _ = copy_voice(voices, "en_US-broken-medium")
    model.write_bytes(model.read_bytes()[:1_000_000])
    path = stack.config()
    text = path.read_text().replace("[fallback]\n", f'[server]\npiper_voices_dir = "{voices}"\n'
                                    '[fallback]\nvoice = "en_US-broken-medium"\n')  # fmt: skip
    path.write_text(text)
    async with stack.daemon(path) as w:
        await logged(stack.daemon_log, "[fallback] voice: Piper voice 'en_US-broken-medium'")
        stack.tts.stop()
        down = await w.say(DOOR, "door-1")
    log = stack.daemon_log.read_text()
    assert "cannot load" in log and "the fallback speaks espeak-ng instead" in log
    assert (down["source"], down["engine"], down["voice"]) == ("fallback", "espeak-ng", "en-us")
    assert stack.capture.read() == espeak_pcm(DOOR, "en-us")
