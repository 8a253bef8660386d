"""The main job end to end: MQTT → daemon → local TTS server → ALSA (file capture).

Real Mosquitto, real ``edgespeak serve`` with espeak-ng, real ``edgespeak run``, real ALSA
through pyalsaaudio into an ALSA ``file`` PCM whose bytes are compared with what the server sent.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import aiomqtt

from edgespeak.sources.cache import PhraseCache
from harness.stack import edgespeak_command
from tests.conftest import Stack, base_env, daemon_process, watching
from tests.helpers import snr_db
from tests.test_scheduler import HOLD, held_provider

DOOR = "Someone is at the front door."
WASHER = "The washing machine has finished. Please empty it."
OPUS_MIN_SNR_DB = 30.0


async def test_plain_text_plays_exactly_what_the_server_sent(stack: Stack) -> None:
    async with stack.daemon() as w:
        await w.announce(WASHER)
        received = await w.wait("received")
        finished = await w.wait("finished", "failed", ann_id=received["id"])
    assert finished["state"] == "finished", finished
    assert finished["source"] == "stream"
    assert w.states(received["id"]) == ["received", "playing", "finished"]
    expected = await stack.sent(WASHER)
    assert len(expected) > 22050  # more than half a second of speech
    assert stack.capture.read() == expected
    assert abs(finished["duration_s"] - len(expected) / 2 / 22050) < 0.001
    assert 0 < finished["ttfa_ms"] < 10_000


async def test_json_payload_then_cache_hit_plays_identical_audio(stack: Stack) -> None:
    async with stack.daemon() as w:
        first = await w.say(DOOR, "door-1")
        first_audio = stack.capture.read()
        second = await w.say(DOOR, "door-2")
        playing = await w.wait("playing", ann_id="door-2")
    assert (first["state"], first["source"]) == ("finished", "stream")
    assert (second["state"], second["source"]) == ("finished", "cache")
    assert playing["source"] == "cache" and playing["ttfa_ms"] > 0
    assert first_audio == await stack.sent(DOOR)
    assert stack.capture.read()[len(first_audio) :] == first_audio
    assert len(list(stack.cache_dir.glob("*.wav"))) == 1
    with PhraseCache(stack.cache_dir) as cache:  # the hit, recorded once it played
        assert [entry.hits for entry in cache.entries()] == [1]


async def test_bad_payloads_fail_clearly_and_the_next_one_plays(stack: Stack) -> None:
    async with stack.daemon() as w:
        await w.announce(b'{"text": "unterminated')
        malformed = await w.wait("failed")
        await w.announce(json.dumps({"text": "   ", "id": "empty-1"}))
        empty = await w.wait("failed", ann_id="empty-1")
        mark = len(w.events)
        await w.announce(b"caf\xe9 \xff")
        not_utf8 = await w.wait("failed", after=mark)
        await w.announce(json.dumps({"text": 42, "id": "typed-1"}))
        wrong_type = await w.wait("failed", ann_id="typed-1")
        good = await w.say(DOOR, "good-1")
    assert "malformed JSON" in malformed["error"]
    assert empty["error"] == "text is empty"
    assert "not valid UTF-8" in not_utf8["error"]
    assert "'text' must be a string" in wrong_type["error"]
    assert good["state"] == "finished"
    # Only the good announcement reached ALSA.
    assert stack.capture.read() == await stack.sent(DOOR)


async def test_retained_announcements_are_never_spoken(stack: Stack) -> None:
    async with aiomqtt.Client("127.0.0.1", stack.broker.port) as client:
        stale = json.dumps({"text": "Old news from yesterday.", "id": "stale-1"})
        await client.publish("edgespeak/testnode/announce", stale, qos=1, retain=True)
    async with stack.daemon() as w:
        fresh = await w.say(DOOR, "fresh-1")
    assert fresh["state"] == "finished"
    assert w.states("stale-1") == []
    assert "ignoring a retained message" in stack.daemon_log.read_text()
    assert stack.capture.read() == await stack.sent(DOOR)


async def test_opus_stream_is_decoded_to_the_servers_source_pcm(stack: Stack) -> None:
    async with stack.daemon(stack.config(fmt="opus", rate=48000)) as w:
        done = await w.say(WASHER, "opus-1")
    assert done["state"] == "finished", done
    source = await stack.sent(WASHER, rate=48000)
    played = stack.capture.read()
    # Pre-skip and end trimming applied: same length, sample-aligned.
    assert len(played) == len(source)
    assert snr_db(source, played) >= OPUS_MIN_SNR_DB


async def test_wav_stream_plays_the_pcm_after_its_header(stack: Stack) -> None:
    async with stack.daemon(stack.config(fmt="wav", rate=16000)) as w:
        done = await w.say(DOOR, "wav-1")
    assert done["state"] == "finished", done
    sent = await stack.sent(DOOR, fmt="wav", rate=16000)
    assert sent[:4] == b"RIFF" and int.from_bytes(sent[24:28], "little") == 16000
    assert stack.capture.read() == sent[44:]
    assert abs(done["duration_s"] - len(sent[44:]) / 2 / 16000) < 0.001


async def test_tts_server_down_without_fallback_fails_clearly_then_recovers(stack: Stack) -> None:
    async with stack.daemon(stack.config(fallback=False)) as w:
        stack.tts.stop()
        down = await w.say(WASHER, "down-1")
        stack.tts.start()
        back = await w.say(WASHER, "back-1")
    assert down["state"] == "failed"
    assert "cannot connect" in down["error"] or "connection" in down["error"]
    assert back["state"] == "finished" and back["source"] == "stream"
    assert stack.capture.read() == await stack.sent(WASHER)


async def test_the_state_follows_the_provider_going_away_and_coming_back(stack: Stack) -> None:
    """``provider_reachable`` in the retained state changes when the provider's reachability
    does, not at the next event or the 30 s refresh (Home Assistant's "TTS provider" sensor read
    "unknown" after a start, or "on" after the provider went away, for up to 30 s)."""
    async with stack.daemon(stack.config(fallback=False)):
        async with aiomqtt.Client("127.0.0.1", stack.broker.port) as client:
            await client.subscribe("edgespeak/testnode/state", qos=1)

            async def reachable(wanted: bool) -> None:
                async with asyncio.timeout(15):
                    async for message in client.messages:
                        state = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                        if state["provider_reachable"] is wanted:
                            return

            await reachable(True)
            stack.tts.stop()
            await reachable(False)
            stack.tts.start()
            await reachable(True)


async def test_broker_restart_resubscribes_and_plays_the_next_announcement(stack: Stack) -> None:
    with daemon_process(stack.config(), stack.capture, stack.workdir):
        async with watching(stack.broker.port) as w:
            before = await w.say(DOOR, "before-1")
        stack.broker.restart()  # no persistence: the daemon must reconnect and subscribe again
        async with watching(stack.broker.port) as w:  # waits for the daemon's fresh 'online'
            after = await w.say(WASHER, "after-1")
    assert before["state"] == "finished" and after["state"] == "finished"
    assert stack.capture.read() == await stack.sent(DOOR) + await stack.sent(WASHER)


async def test_missing_sound_card_fails_each_announcement_clearly_and_keeps_running(
    stack: Stack,
) -> None:
    async with stack.daemon(stack.config(device="no_such_card")) as w:
        first = await w.say(DOOR, "nocard-1")
        second = await w.say(WASHER, "nocard-2")
    for event in (first, second):
        assert event["state"] == "failed"
        assert "ALSA device 'no_such_card'" in event["error"]
    assert "playing" not in w.states("nocard-1")


async def test_say_command_reports_source_and_exit_code(stack: Stack) -> None:
    config = stack.config(fallback=False)
    async with stack.daemon(config):
        ok = await _run_say(config, DOOR)
        bad = await _run_say(config, DOOR, "--voice", "no-such-voice")
    assert ok.returncode == 0, ok.stderr
    assert "spoken: source=stream" in ok.stdout and "ttfa=" in ok.stdout
    assert bad.returncode == 1
    assert "unknown voice 'no-such-voice'" in bad.stderr


async def test_say_command_reports_an_interrupted_announcement_at_once(stack: Stack) -> None:
    """Any last event ends the wait: interrupted (or expired) is reported as such, exit 1,
    instead of waiting out the timeout for a finished or failed that never comes."""
    async with held_provider() as provider:
        config = stack.config(tts_url=provider.url)
        async with stack.daemon(config) as w:
            say = asyncio.create_task(_run_say(config, HOLD, timeout_s=15))
            await w.wait("playing")
            await w.client.publish("edgespeak/testnode/stop", b"", qos=1)
            result = await say
    assert result.returncode == 1
    assert result.stderr == "interrupted: stopped\n"


async def _run_say(
    config: Path, *args: str, timeout_s: float = 30
) -> subprocess.CompletedProcess[str]:
    cmd = edgespeak_command("say", *args, "--config", str(config), "--timeout", f"{timeout_s:g}")
    return await asyncio.to_thread(
        subprocess.run, cmd, capture_output=True, text=True, env=base_env(), timeout=60
    )
