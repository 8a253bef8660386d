"""Fault injection with real processes: the TTS server killed mid-stream, the ALSA device
missing at start and appearing later.

Each fault is made real (SIGKILL, an ALSA config without the device), and the checks are on
what a user sees: the events, the bytes handed to ALSA (file capture), the daemon's process
and its availability. docs/reliability.md lists every fault, what the daemon does and the test.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

from edgespeak.sources.cache import PhraseCache
from harness.stack import capture_alsa_conf
from tests.conftest import Stack, Watcher, daemon_process, watching
from tests.test_offline import espeak_pcm

DOOR = "Someone is at the front door."
WASHER = "The washing machine has finished. Please empty it."
# About 4,600 characters, ~4 minutes of speech that espeak-ng takes ~0.7 s to synthesise on
# an idle 2-core machine: long enough to catch the server while it is still streaming.
LONG = "Here is the weather report. " + " ".join(
    f"In area {i} the wind comes from the west at {i + 10} kilometres an hour, with rain later."
    for i in range(55)
)
KILL_ATTEMPTS = 3
LONG_LIMITS = {
    "EDGESPEAK_LIMITS__MAX_TEXT_CHARS": "10000",
    "EDGESPEAK_LIMITS__MAX_PAYLOAD_BYTES": "65536",
}


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux ``/proc/PID/task/*/children``)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


async def kill_server_mid_stream(stack: Stack, w: Watcher) -> tuple[str, str, int]:
    """Announce a long text and SIGKILL the TTS server while it still streams it. Returns the
    announcement's id and text, and the capture's length before it.

    The server is frozen (SIGSTOP) once the announcement plays, and killed only if it is
    still synthesising (an espeak-ng child alive: the session cannot have sent 'finish');
    SIGSTOP only makes that check race-free, the fault is the SIGKILL. If the server was
    between two syntheses or done, it is let go and the next attempt (another text, so not a
    cache hit) tries again.
    """
    server = stack.tts.server
    assert server is not None and server.proc is not None
    for n in range(1, KILL_ATTEMPTS + 1):
        ann_id, text, mark = f"long-{n}", f"{LONG} That was part {n}.", len(stack.capture.read())
        await w.announce(json.dumps({"text": text, "id": ann_id}))
        await w.wait("playing", ann_id=ann_id)
        os.kill(server.proc.pid, signal.SIGSTOP)
        if children(server.proc.pid):
            server.proc.kill()
            await asyncio.to_thread(server.proc.wait)
            return ann_id, text, mark
        os.kill(server.proc.pid, signal.SIGCONT)
        done = await w.wait("finished", "failed", ann_id=ann_id)
        assert done["state"] == "finished", done
    raise AssertionError(f"the server finished {KILL_ATTEMPTS} long texts before its kill")


async def test_tts_server_killed_mid_stream_fails_clearly_then_fallback_then_stream(
    stack: Stack,
) -> None:
    """SIGKILL ``edgespeak serve`` while it streams a long announcement: that announcement
    fails at once with an event saying the stream was cut (what had arrived played, byte for
    byte, and nothing cached); the next one is spoken by the fallback while the server is
    down, the one after by the restarted server; the daemon stays up and online."""
    assert 4000 < len(LONG) < 4950  # the local server takes 5000 characters a session
    config = stack.config(first_audio_timeout_ms=5000)
    with daemon_process(config, stack.capture, stack.workdir, env=LONG_LIMITS) as daemon:
        async with watching(stack.broker.port) as w:
            ann_id, text, mark = await kill_server_mid_stream(stack, w)
            cut = await w.wait("finished", "failed", ann_id=ann_id, timeout_s=10)
            down = await w.say(WASHER, "down-1")
            stack.tts.start()
            back = await w.say(DOOR, "back-1")
            assert w.online.is_set()
            assert daemon.poll() is None
    assert cut["state"] == "failed", cut
    assert cut["source"] == "stream"
    assert cut["error"] == (
        "the TTS provider's connection closed before 'finish': speech cut short"
    ), cut
    assert (down["state"], down["source"]) == ("finished", "fallback"), down
    assert "cannot connect" in down["reason"]
    assert (back["state"], back["source"]) == ("finished", "stream"), back
    # From ``mark`` on, the capture is the cut stream, the fallback's speech, the restarted
    # server's speech. (Split from the end: the failed event may come before ALSA took the
    # last cut chunk.)
    captured, down_pcm, back_pcm = stack.capture.read(), espeak_pcm(WASHER), await stack.sent(DOOR)
    assert captured.endswith(down_pcm + back_pcm)
    cut_audio = captured[mark : len(captured) - len(down_pcm) - len(back_pcm)]
    full = await stack.sent(text)
    assert 0 < len(cut_audio) < len(full)
    assert full.startswith(cut_audio)  # what had arrived played as sent: no garbage, no gap
    texts = {e.text for e in PhraseCache(stack.cache_dir).entries()}
    assert DOOR in texts and text not in texts, texts  # the cut stream was not cached


async def test_alsa_device_missing_at_start_is_used_once_it_appears(stack: Stack) -> None:
    """The daemon's device ``speaker`` is not in the ALSA config at start: announcements fail
    naming the device; once the config defines it (the file replaced, as a package or an
    editor does) the next announcement plays on it, with no restart."""
    conf = stack.capture.conf
    env = capture_alsa_conf(conf, stack.capture.path)  # 'capture' and 'default', no 'speaker'
    config = stack.config(device="speaker")
    with daemon_process(config, stack.capture, stack.workdir, env=env) as daemon:
        async with watching(stack.broker.port) as w:
            missing = [await w.say(DOOR, "missing-1"), await w.say(DOOR, "missing-2")]
            replaced = conf.with_suffix(".new")
            speaker = 'pcm.speaker {\n type plug\n slave.pcm "capture"\n}\n'
            replaced.write_text(conf.read_text() + speaker)
            os.replace(replaced, conf)
            back = await w.say(WASHER, "back-1")
            again = await w.say(WASHER, "back-2")
            assert daemon.poll() is None
    for event in missing:
        assert event["state"] == "failed", event
        assert event["error"].startswith("ALSA device 'speaker': "), event
    assert (back["state"], again["state"]) == ("finished", "finished"), (back, again)
    assert again["source"] == "cache"
    assert stack.capture.read() == await stack.sent(WASHER) * 2
