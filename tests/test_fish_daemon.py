"""The daemon facing a Fish server that refuses or fails: real Mosquitto, real daemon, our
server in-process (counting every handshake) with a real bearer token or its test switches,
espeak-ng as the offline fallback, ALSA file capture."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from harness.stack import Mosquitto
from tests.conftest import AlsaCapture, daemon_config, daemon_process, watching
from tests.helpers import CountingServer, serving_app
from tests.test_offline import espeak_pcm

RIGHT, WRONG = "sk-right-7d1e", "sk-wrong-03aa"
TEXTS = ["The front door is open.", "The post has arrived.", "Dinner is ready."]


@pytest.mark.parametrize("status", [401, 402])
async def test_a_refused_connection_is_not_hammered_and_the_fallback_speaks_each_time(
    broker: Mosquitto, alsa_capture: AlsaCapture, tmp_path: Path, status: int
) -> None:
    if status == 401:  # a real refusal: the daemon's key is not the server's
        server = CountingServer(token=SecretStr(RIGHT))
    else:
        server = CountingServer(test_refuse_status=402)
    async with serving_app(server.app) as url:
        config = daemon_config(
            tmp_path / "daemon.toml", broker_port=broker.port, tts_url=url,
            cache_dir=tmp_path / "cache",
        )  # fmt: skip
        env = {"EDGESPEAK_TTS__API_KEY": WRONG}
        with daemon_process(config, alsa_capture, tmp_path, env):
            async with watching(broker.port) as w:
                await server.wait(lambda: len(server.paths) >= 1)  # refused at start-up
                done = [await w.say(text, f"refused-{i}") for i, text in enumerate(TEXTS)]
                handshakes = len(server.paths)
    why = "the API key was refused (401)" if status == 401 else "out of credit (402)"
    for event in done:
        assert (event["state"], event["source"]) == ("finished", "fallback"), event
        assert why in event["reason"] and WRONG not in event["reason"]
    assert alsa_capture.read() == b"".join(espeak_pcm(text) for text in TEXTS)
    log = (tmp_path / "daemon.log").read_text()
    assert WRONG not in log
    if status == 401:
        # One handshake in all: none per announcement, no background retries.
        assert handshakes == 1
        assert log.count("refused the connection, not connecting again") == 1
    else:  # retried in the background (tests/test_fish_client.py checks the backoff)
        first_error = "ERROR edgespeak.providers.fish: TTS provider: the account is out of credit"
        assert log.count(first_error) == 1


@pytest.mark.parametrize("fault", ["error_before_audio", "error_after_audio", "close_after_audio"])
async def test_a_session_that_ends_badly_is_reported_with_the_servers_detail(
    broker: Mosquitto, alsa_capture: AlsaCapture, tmp_path: Path, fault: str
) -> None:
    server = CountingServer(test_session_fault=fault)
    async with serving_app(server.app) as url:
        config = daemon_config(
            tmp_path / "daemon.toml", broker_port=broker.port, tts_url=url,
            cache_dir=tmp_path / "cache",
        )  # fmt: skip
        with daemon_process(config, alsa_capture, tmp_path):
            async with watching(broker.port) as w:
                done = await w.say("Hello there. The washing is done.", "fault-1")
                states = w.states("fault-1")
    if fault == "error_before_audio":  # nothing played yet: the fallback says it all
        assert (done["state"], done["source"]) == ("finished", "fallback"), done
        assert f"test switch: {fault}" in done["reason"] and "status=500" in done["reason"]
        assert alsa_capture.read() == espeak_pcm("Hello there. The washing is done.")
    else:  # audio came: it fails, saying why, rather than repeating it all from the fallback
        assert states[0] == "received" and states[-1] == "failed", states
        assert done.get("source") == "stream", done
        detail = f"test switch: {fault}" if fault == "error_after_audio" else "before 'finish'"
        assert detail in done["error"], done
    assert not list((tmp_path / "cache").glob("*.wav"))  # nothing of it was cached
