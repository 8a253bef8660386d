"""The main job end to end: MQTT → daemon → local TTS server → ALSA (file capture).

Real Mosquitto, real ``edgespeak serve`` with espeak-ng, real ``edgespeak run``, real ALSA
through pyalsaaudio into an ALSA ``file`` PCM whose bytes are compared with what the server sent.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from edgespeak.stack import edgespeak_command
from tests.conftest import (
    AlsaCapture,
    Broker,
    TtsServer,
    base_env,
    daemon_config,
    daemon_process,
    watching,
)
from tests.helpers import server_audio, snr_db

DOOR = "Someone is at the front door."
WASHER = "The washing machine has finished. Please empty it."


async def test_plain_text_plays_exactly_what_the_server_sent(
    broker: Broker, tts_server: TtsServer, alsa_capture: AlsaCapture, tmp_path: Path
) -> None:
    cfg = daemon_config(tmp_path / "d.toml", broker_port=broker.port, tts_url=tts_server.url,
                        cache_dir=tmp_path / "cache")  # fmt: skip
    with daemon_process(cfg, alsa_capture, tmp_path):
        async with watching(broker.port) as w:
            await w.announce(WASHER)
            received = await w.wait("received")
            finished = await w.wait("finished", "failed", ann_id=received["id"])
    assert finished["state"] == "finished", finished
    assert finished["source"] == "stream"
    assert w.states(received["id"]) == ["received", "playing", "finished"]
    expected = await server_audio(tts_server.url, WASHER, fmt="pcm", rate=22050)
    assert len(expected) > 22050  # more than half a second of speech
    assert alsa_capture.read() == expected
    assert abs(finished["duration_s"] - len(expected) / 2 / 22050) < 0.001
    assert 0 < finished["ttfa_ms"] < 10_000


async def test_json_payload_then_cache_hit_plays_identical_audio(
    broker: Broker, tts_server: TtsServer, alsa_capture: AlsaCapture, tmp_path: Path
) -> None:
    cfg = daemon_config(tmp_path / "d.toml", broker_port=broker.port, tts_url=tts_server.url,
                        cache_dir=tmp_path / "cache")  # fmt: skip
    with daemon_process(cfg, alsa_capture, tmp_path):
        async with watching(broker.port) as w:
            first = await w.say(DOOR, "door-1")
            first_audio = alsa_capture.read()
            second = await w.say(DOOR, "door-2")
            playing = await w.wait("playing", ann_id="door-2")
    assert (first["state"], first["source"]) == ("finished", "stream")
    assert (second["state"], second["source"]) == ("finished", "cache")
    assert playing["source"] == "cache" and playing["ttfa_ms"] > 0
    assert first_audio == await server_audio(tts_server.url, DOOR, fmt="pcm", rate=22050)
    assert alsa_capture.read()[len(first_audio) :] == first_audio
    assert len(list((tmp_path / "cache").glob("*.wav"))) == 1


async def test_bad_payloads_fail_clearly_and_the_next_one_plays(
    broker: Broker, tts_server: TtsServer, alsa_capture: AlsaCapture, tmp_path: Path
) -> None:
    cfg = daemon_config(tmp_path / "d.toml", broker_port=broker.port, tts_url=tts_server.url,
                        cache_dir=tmp_path / "cache")  # fmt: skip
    with daemon_process(cfg, alsa_capture, tmp_path):
        async with watching(broker.port) as w:
            await w.announce(b'{"text": "unterminated')
            malformed = await w.wait("failed")
            await w.announce(json.dumps({"text": "   ", "id": "empty-1"}))
            empty = await w.wait("failed", ann_id="empty-1")
            mark = len(w.events)
            await w.announce(b"caf\xe9 \xff")
            not_utf8 = await w.wait("failed", after=mark)
            await w.announce(json.dumps({"text": 42, "id": "typed-1"}))
            wrong_type = await w.wait("failed", ann_id="typed-1")
            await w.announce(json.dumps({"text": "hello", "voice": "no-such-voice", "id": "v-1"}))
            unknown_voice = await w.wait("failed", ann_id="v-1")
            good = await w.say(DOOR, "good-1")
    assert "malformed JSON" in malformed["error"]
    assert empty["error"] == "text is empty"
    assert "not valid UTF-8" in not_utf8["error"]
    assert "'text' must be a string" in wrong_type["error"]
    assert "unknown voice 'no-such-voice'" in unknown_voice["error"]
    assert good["state"] == "finished"
    # Only the good announcement reached ALSA.
    assert alsa_capture.read() == await server_audio(tts_server.url, DOOR, fmt="pcm", rate=22050)


async def test_retained_announcements_are_never_spoken(
    broker: Broker, tts_server: TtsServer, alsa_capture: AlsaCapture, tmp_path: Path
) -> None:
    import aiomqtt

    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        stale = json.dumps({"text": "Old news from yesterday.", "id": "stale-1"})
        await client.publish("edgespeak/testnode/announce", stale, qos=1, retain=True)
    cfg = daemon_config(tmp_path / "d.toml", broker_port=broker.port, tts_url=tts_server.url,
                        cache_dir=tmp_path / "cache")  # fmt: skip
    with daemon_process(cfg, alsa_capture, tmp_path) as log:
        async with watching(broker.port) as w:
            fresh = await w.say(DOOR, "fresh-1")
    assert fresh["state"] == "finished"
    assert w.states("stale-1") == []
    assert "ignoring retained announcement" in log.read_text()
    assert alsa_capture.read() == await server_audio(tts_server.url, DOOR, fmt="pcm", rate=22050)


async def test_opus_stream_is_decoded_to_the_servers_source_pcm(
    broker: Broker, tts_server: TtsServer, alsa_capture: AlsaCapture, tmp_path: Path
) -> None:
    cfg = daemon_config(tmp_path / "d.toml", broker_port=broker.port, tts_url=tts_server.url,
                        cache_dir=tmp_path / "cache", fmt="opus", rate=48000)  # fmt: skip
    with daemon_process(cfg, alsa_capture, tmp_path):
        async with watching(broker.port) as w:
            done = await w.say(WASHER, "opus-1")
    assert done["state"] == "finished", done
    source = await server_audio(tts_server.url, WASHER, fmt="pcm", rate=48000)
    played = alsa_capture.read()
    # Pre-skip and end trimming applied: same length, sample-aligned.
    assert len(played) == len(source)
    assert snr_db(source, played) >= OPUS_MIN_SNR_DB


async def test_tts_server_down_fails_clearly_then_recovers(
    broker: Broker, tts_server: TtsServer, alsa_capture: AlsaCapture, tmp_path: Path
) -> None:
    cfg = daemon_config(tmp_path / "d.toml", broker_port=broker.port, tts_url=tts_server.url,
                        cache_dir=tmp_path / "cache")  # fmt: skip
    with daemon_process(cfg, alsa_capture, tmp_path):
        async with watching(broker.port) as w:
            tts_server.stop()
            down = await w.say(WASHER, "down-1")
            tts_server.start()
            back = await w.say(WASHER, "back-1")
    assert down["state"] == "failed"
    assert "cannot connect" in down["error"] or "connection" in down["error"]
    assert back["state"] == "finished" and back["source"] == "stream"
    assert alsa_capture.read() == await server_audio(tts_server.url, WASHER, fmt="pcm", rate=22050)


async def test_broker_restart_resubscribes_and_plays_the_next_announcement(
    broker: Broker, tts_server: TtsServer, alsa_capture: AlsaCapture, tmp_path: Path
) -> None:
    cfg = daemon_config(tmp_path / "d.toml", broker_port=broker.port, tts_url=tts_server.url,
                        cache_dir=tmp_path / "cache")  # fmt: skip
    with daemon_process(cfg, alsa_capture, tmp_path):
        async with watching(broker.port) as w:
            before = await w.say(DOOR, "before-1")
        broker.restart()  # no persistence: the daemon must reconnect and subscribe again
        async with watching(broker.port) as w:  # waits for the daemon's fresh 'online'
            after = await w.say(WASHER, "after-1")
    assert before["state"] == "finished" and after["state"] == "finished"
    door = await server_audio(tts_server.url, DOOR, fmt="pcm", rate=22050)
    washer = await server_audio(tts_server.url, WASHER, fmt="pcm", rate=22050)
    assert alsa_capture.read() == door + washer


OPUS_MIN_SNR_DB = 30.0


async def test_wav_stream_plays_the_pcm_after_its_header(
    broker: Broker, tts_server: TtsServer, alsa_capture: AlsaCapture, tmp_path: Path
) -> None:
    cfg = daemon_config(tmp_path / "d.toml", broker_port=broker.port, tts_url=tts_server.url,
                        cache_dir=tmp_path / "cache", fmt="wav", rate=16000)  # fmt: skip
    with daemon_process(cfg, alsa_capture, tmp_path):
        async with watching(broker.port) as w:
            done = await w.say(DOOR, "wav-1")
    assert done["state"] == "finished", done
    sent = await server_audio(tts_server.url, DOOR, fmt="wav", rate=16000)
    assert sent[:4] == b"RIFF" and int.from_bytes(sent[24:28], "little") == 16000
    assert alsa_capture.read() == sent[44:]
    assert abs(done["duration_s"] - len(sent[44:]) / 2 / 16000) < 0.001


async def test_missing_sound_card_fails_each_announcement_clearly_and_keeps_running(
    broker: Broker, tts_server: TtsServer, alsa_capture: AlsaCapture, tmp_path: Path
) -> None:
    cfg = daemon_config(tmp_path / "d.toml", broker_port=broker.port, tts_url=tts_server.url,
                        cache_dir=tmp_path / "cache")  # fmt: skip
    cfg.write_text(cfg.read_text().replace('device = "default"', 'device = "no_such_card"'))
    with daemon_process(cfg, alsa_capture, tmp_path):
        async with watching(broker.port) as w:
            first = await w.say(DOOR, "nocard-1")
            second = await w.say(WASHER, "nocard-2")
    for event in (first, second):
        assert event["state"] == "failed"
        assert "ALSA device 'no_such_card'" in event["error"]
    assert "playing" not in w.states("nocard-1")
    # A phrase that never played is not cached as if it had.
    assert list((tmp_path / "cache").glob("*.wav")) == []


async def test_say_command_reports_source_and_exit_code(
    broker: Broker, tts_server: TtsServer, alsa_capture: AlsaCapture, tmp_path: Path
) -> None:
    cfg = daemon_config(tmp_path / "d.toml", broker_port=broker.port, tts_url=tts_server.url,
                        cache_dir=tmp_path / "cache")  # fmt: skip
    with daemon_process(cfg, alsa_capture, tmp_path):
        async with watching(broker.port):
            ok = await _run_say(cfg, DOOR)
            bad = await _run_say(cfg, DOOR, "--voice", "no-such-voice")
    assert ok.returncode == 0, ok.stderr
    assert "spoken: source=stream" in ok.stdout and "ttfa=" in ok.stdout
    assert bad.returncode == 1
    assert "unknown voice 'no-such-voice'" in bad.stderr


async def _run_say(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = edgespeak_command("say", *args, "--config", str(cfg), "--timeout", "30")
    return await asyncio.to_thread(
        subprocess.run, cmd, capture_output=True, text=True, env=base_env(), timeout=60
    )
