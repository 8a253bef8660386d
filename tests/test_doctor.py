"""``edgespeak doctor`` as a user runs it: a subprocess against a real broker, a real local
server and a real ALSA ``file`` device. Each broken part is reported with its fix and a
non-zero exit, the others still pass, and no seeded secret appears anywhere in its output."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.stack import Mosquitto, edgespeak_command, free_port
from tests.conftest import AlsaCapture, TtsServer, base_env, daemon_config, watching

TTS_KEY = "sk-doctor-7f3e9a1b2c"
MQTT_PASSWORD = "mqtt-pw-5d8c1e0f"


@dataclass(frozen=True)
class Report:
    code: int
    output: str  # stdout and stderr together

    def row(self, part: str) -> str:
        """The row of ``part`` and its fix line, if any."""
        lines = self.output.splitlines()
        for i, line in enumerate(lines):
            if line.startswith(f"{part} "):
                fix = lines[i + 1] if i + 1 < len(lines) and "fix:" in lines[i + 1] else ""
                return f"{line}\n{fix}"
        raise AssertionError(f"no {part} row in:\n{self.output}")

    def result(self, part: str) -> str:
        return self.row(part).split()[1]


async def run_doctor(config: Path, capture: AlsaCapture) -> Report:
    proc = await asyncio.create_subprocess_exec(
        *edgespeak_command("doctor", "--config", str(config)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=base_env() | capture.env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return Report(proc.returncode, out.decode())


@pytest.fixture
def secured(tmp_path: Path) -> Mosquitto:
    broker = Mosquitto(free_port(), tmp_path, users={"speaker": MQTT_PASSWORD})
    broker.start()
    yield broker  # type: ignore[misc]
    broker.stop()


@pytest.fixture
def keyed_server(tmp_path: Path) -> TtsServer:
    server = TtsServer(free_port(), tmp_path, token=TTS_KEY)
    server.start()
    yield server  # type: ignore[misc]
    server.stop()


def config_for(
    tmp_path: Path, broker: Mosquitto, server: TtsServer, *, device: str = "default",
    key: str = TTS_KEY, password: str = MQTT_PASSWORD,
) -> Path:  # fmt: skip
    path = daemon_config(
        tmp_path / "daemon.toml", broker_port=broker.port, tts_url=server.url,
        cache_dir=tmp_path / "cache", device=device,
        mqtt={"username": "speaker", "password": password},
    )  # fmt: skip
    text = path.read_text().replace("[tts]\n", f'[tts]\napi_key = "{key}"\n', 1)
    path.write_text(text)
    return path


def assert_no_secret(text: str) -> None:
    assert TTS_KEY not in text and MQTT_PASSWORD not in text
    assert "sk-wrong" not in text and "wrong-pw" not in text


async def test_everything_working_passes_and_plays_100_ms_of_silence(
    tmp_path: Path, secured: Mosquitto, keyed_server: TtsServer, alsa_capture: AlsaCapture
) -> None:
    report = await run_doctor(config_for(tmp_path, secured, keyed_server), alsa_capture)
    assert report.code == 0, report.output
    for part in ("config", "audio", "broker", "tts", "fallback", "cache"):
        assert report.result(part) == "ok", report.output
    assert report.output.rstrip().endswith("all checks passed")
    assert alsa_capture.read() == bytes(2205 * 2)  # 100 ms of s16le mono at 22050 Hz
    assert "'Test.' →" in report.row("tts") and "s of pcm" in report.row("tts")
    assert "with MQTT 5: subscribed to 2" in report.row("broker")  # the node's and all's
    assert_no_secret(report.output)


async def test_stopped_broker_is_reported_with_a_fix(
    tmp_path: Path, secured: Mosquitto, keyed_server: TtsServer, alsa_capture: AlsaCapture
) -> None:
    config = config_for(tmp_path, secured, keyed_server)
    secured.stop()
    report = await run_doctor(config, alsa_capture)
    assert report.code == 1
    assert report.result("broker") == "FAIL"
    assert f"broker 127.0.0.1:{secured.port} unreachable" in report.row("broker")
    assert "fix: start the broker" in report.row("broker")
    assert [report.result(p) for p in ("audio", "tts", "cache")] == ["ok", "ok", "ok"]
    assert report.output.rstrip().endswith("1 failed: broker")


async def test_missing_audio_device_is_reported_with_a_fix(
    tmp_path: Path, secured: Mosquitto, keyed_server: TtsServer, alsa_capture: AlsaCapture
) -> None:
    config = config_for(tmp_path, secured, keyed_server, device="hw:CARD=NoSuchCard")
    report = await run_doctor(config, alsa_capture)
    assert report.code == 1
    assert report.result("audio") == "FAIL"
    assert "NoSuchCard" in report.row("audio") and "fix: set [audio] device" in report.row("audio")
    assert report.result("broker") == "ok" and report.result("tts") == "ok"


async def test_wrong_keys_are_reported_without_showing_any_key(
    tmp_path: Path, secured: Mosquitto, keyed_server: TtsServer, alsa_capture: AlsaCapture
) -> None:
    config = config_for(
        tmp_path, secured, keyed_server, key="sk-wrong-0000", password="wrong-pw-0000"
    )
    report = await run_doctor(config, alsa_capture)
    assert report.code == 1
    assert report.result("tts") == "FAIL" and "401" in report.row("tts")
    assert "fix: set [tts] api_key" in report.row("tts")
    assert report.result("broker") == "FAIL" and "refused the login" in report.row("broker")
    assert "fix: set [mqtt] username and password" in report.row("broker")
    assert report.output.rstrip().endswith("2 failed: broker, tts")
    assert_no_secret(report.output)


async def test_a_broken_config_is_the_one_failed_row(
    tmp_path: Path, alsa_capture: AlsaCapture
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[audio]\nperiod_ms = "fast"\n[tts]\napi_key = "sk-in-a-bad-file"\n')
    report = await run_doctor(config, alsa_capture)
    assert report.code == 1
    assert report.result("config") == "FAIL" and "audio.period_ms" in report.row("config")
    assert "sk-in-a-bad-file" not in report.output


async def test_the_daemon_never_shows_its_secrets_in_logs_or_events(
    tmp_path: Path, secured: Mosquitto, keyed_server: TtsServer, alsa_capture: AlsaCapture
) -> None:
    """Seeded key and password, DEBUG logging, a spoken announcement, a refused one and the
    daemon's own connection messages: neither secret appears in the log or any event."""
    from tests.conftest import daemon_process

    config = config_for(tmp_path, secured, keyed_server)
    login = {"username": "speaker", "password": MQTT_PASSWORD}
    with daemon_process(config, alsa_capture, tmp_path):
        async with watching(secured.port, **login) as w:
            spoken = await w.say("The key stays secret.", "s-1")
            await w.announce(b'{"text": "oops"')
            refused = await w.wait("failed")
    events = json.dumps(w.events)
    assert spoken["state"] == "finished" and spoken["source"] == "stream"
    assert "malformed JSON" in refused["error"]
    log = (tmp_path / "daemon.log").read_text()
    assert "DEBUG" in log  # the most talkative level was on
    assert_no_secret(log)
    assert_no_secret(events)
    assert_no_secret((tmp_path / "server.log").read_text())


async def test_engines_voices_and_their_real_time_factors_are_shown(
    tmp_path: Path, secured: Mosquitto, keyed_server: TtsServer, alsa_capture: AlsaCapture
) -> None:
    config = config_for(tmp_path, secured, keyed_server)
    with config.open("a") as f:  # [fallback] is the config's last table
        f.write('voice = "en_US-joe-medium"\nlive_max_rtf = 100.0\n')
    report = await run_doctor(config, alsa_capture)
    assert report.code == 0, report.output
    espeak, piper = report.row("espeak-ng"), report.row("piper")
    assert report.result("espeak-ng") == "ok" and "voices; real-time factor 0." in espeak
    assert report.result("piper") == "ok"
    assert "1 voice: en_US-joe-medium (en-us, medium); real-time factor " in piper
    assert "on this machine (en_US-joe-medium, loaded in" in piper
    fallback = report.row("fallback")
    assert "Piper voice 'en_US-joe-medium' in a worker process; live fallback speaks it" in fallback


async def test_a_broken_piper_fallback_voice_fails_with_a_fix(
    tmp_path: Path, secured: Mosquitto, keyed_server: TtsServer, alsa_capture: AlsaCapture
) -> None:
    voices = tmp_path / "voices"
    voices.mkdir()
    (voices / "en_US-gone-medium.onnx.json").write_text("{}")  # its model is missing
    config = config_for(tmp_path, secured, keyed_server)
    text = config.read_text().replace(
        "[fallback]\n",
        f'[server]\npiper_voices_dir = "{voices}"\n[fallback]\nvoice = "en_US-gone-medium"\n',
    )
    config.write_text(text)
    report = await run_doctor(config, alsa_capture)
    assert report.code == 1
    assert report.result("fallback") == "FAIL"
    assert "Piper voice 'en_US-gone-medium': its model file is missing" in report.row("fallback")
    assert "fix: replace the voice's files" in report.row("fallback")
