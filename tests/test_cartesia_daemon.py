"""``[tts] provider = "cartesia"``: the configuration, and the daemon end to end.

Real Mosquitto, real ``edgespeak serve`` (its Cartesia endpoint, espeak-ng), real
``edgespeak run``, real ALSA into a ``file`` PCM compared with what espeak-ng itself says.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgespeak.base.errors import ConfigError
from edgespeak.config import Settings, load_config
from edgespeak.sources.cache import phrase_key
from tests.conftest import Stack
from tests.helpers import espeak_pcm

DOOR = "Someone is at the front door."


def config(path: Path, tts: str, server: str = "") -> Path:
    path.write_text(f"[tts]\n{tts}\n[server]\n{server}\n")
    return path


def test_cartesia_defaults_url_model_and_cache_key(tmp_path: Path) -> None:
    s = load_config(config(tmp_path / "c.toml", 'provider = "cartesia"', "port = 9100"))
    assert s.tts_url == "ws://127.0.0.1:9100/tts/websocket"
    assert (s.tts.model, s.tts.max_buffer_delay_ms, s.tts.cartesia_version) == (
        "sonic-3", 0, "2025-04-16",
    )  # fmt: skip
    fish = load_config(config(tmp_path / "f.toml", "", "port = 9100"))
    assert (fish.tts_url, fish.tts.model) == ("ws://127.0.0.1:9100/v1/tts/live", "s1")
    explicit = load_config(config(tmp_path / "m.toml", 'provider = "cartesia"\nmodel = "sonic-2"'))
    assert explicit.tts.model == "sonic-2"
    same = Settings(tts=fish.tts.model_copy(update={"model": "sonic-3"}), server=fish.server)
    assert phrase_key(s, "ws://x", DOOR, None) != phrase_key(same, "ws://x", DOOR, None)


@pytest.mark.parametrize(
    ("tts", "complaint"),
    [
        ('provider = "cartesia"\nformat = "opus"', 'set format = \\"pcm\\"'),
        ('provider = "cartesia"\nsample_rate = 11025', "sample_rate one of 8000, 16000"),
        ('provider = "cartesia"\nmax_buffer_delay_ms = 6000', "max_buffer_delay_ms"),
        ('provider = "cartesia"\nurl = "wss://api.cartesia.ai/tts/websocket"',
         "needs reference_id"),
    ],
)  # fmt: skip
def test_cartesia_settings_it_cannot_use_are_refused(
    tmp_path: Path, tts: str, complaint: str
) -> None:
    with pytest.raises(ConfigError, match=complaint):
        load_config(config(tmp_path / "c.toml", tts))


async def test_daemon_speaks_through_the_local_cartesia_endpoint(stack: Stack) -> None:
    path = stack.workdir / "cartesia.toml"
    path.write_text(
        f'node_id = "testnode"\n[mqtt]\nport = {stack.broker.port}\nreconnect_max_s = 1.0\n'
        '[tts]\nprovider = "cartesia"\nsample_rate = 22050\nconnect_timeout_s = 2.0\n'
        "reconnect_max_s = 1.0\n"
        f'first_audio_timeout_ms = 5000\n[server]\nhost = "127.0.0.1"\nport = {stack.tts.port}\n'
        f'[cache]\ndir = "{stack.cache_dir}"\n[audio]\ndevice = "default"\nfade_ms = 0\n'
        "keep_open_s = 0\n[fallback]\nenabled = false\n"
    )  # no [tts] url: the embedded default, the local server's /tts/websocket
    async with stack.daemon(path) as w:
        first = await w.say(DOOR, "cartesia-1")
        first_audio = stack.capture.read()
        second = await w.say(DOOR, "cartesia-2")
    assert (first["state"], first["source"]) == ("finished", "stream"), first
    assert (second["state"], second["source"]) == ("finished", "cache"), second
    assert first_audio == espeak_pcm(DOOR)  # what the server's espeak-ng said, byte for byte
    assert stack.capture.read() == first_audio * 2
    assert f"ws://127.0.0.1:{stack.tts.port}/tts/websocket" in stack.daemon_log.read_text()
