"""Phrase-cache keys: what a key covers and what it ignores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgespeak.config import Settings
from edgespeak.providers.fish_request import Overrides, provider_request
from edgespeak.sources.cache import normalise_text, phrase_key
from tests.cache_support import key_for


def test_normalise_text_folds_whitespace_and_keeps_case() -> None:
    assert normalise_text("  Hello,\t\n  World \u00a0 again ") == "Hello, World again"


def test_cache_key_folds_whitespace_only() -> None:
    base = key_for("The door is open.")
    assert len(base) == 64 and int(base, 16) >= 0
    assert key_for("  The   door\nis open. ") == base
    assert key_for("The door is open.", prosody={}) == base  # empty prosody = none
    changed = [
        key_for("the door is open."),
        key_for("The door is open", voice=None),
        key_for("The door is open.", voice="alice"),
        key_for("The door is open.", format="opus"),
        key_for("The door is open.", sample_rate=24000),
        key_for("The door is open.", sample_rate=None),
        key_for("The door is open.", prosody={"speed": 1.2}),
        key_for("The door is open.", endpoint="wss://api.fish.audio/v1/tts/live"),
        key_for("The door is open.", model="s2"),
        key_for("The door is open.", provider="other"),
    ]
    assert base not in changed
    assert len(set(changed)) == len(changed)
    # prosody is canonical: key order does not matter, values do
    assert key_for("x", prosody={"a": 1, "b": 2}) == key_for("x", prosody={"b": 2, "a": 1})
    assert key_for("x", prosody={"a": 1}) != key_for("x", prosody={"a": 2})


# -- the key of one phrase as the configured provider speaks it ------------------------------

URL = "ws://127.0.0.1:9100/tts/websocket"
DOOR = "Someone is at the front door."


def cartesia(**tts: Any) -> Settings:
    return Settings(tts={"provider": "cartesia", **tts})


def key(settings: Settings, voice: str | None = None, **overrides: Any) -> str:
    request = provider_request(settings, voice, Overrides(**overrides))
    return phrase_key(settings, URL, DOOR, request=request)


def test_fish_keys_are_what_they_were() -> None:
    """Entries stored by earlier versions still hit: a Fish key is computed as before."""
    live = "ws://127.0.0.1:9000/v1/tts/live"
    assert phrase_key(Settings(), live, DOOR) == (
        "063701b8b4947aa74700b65f9c3a1b3ec0374a31748073ce20f3729dd66cde1c"
    )
    opus = Settings(tts={"format": "opus", "prosody": {"speed": 1.2}})
    assert phrase_key(opus, live, DOOR, "voice-1") == (
        "75911cc0f0e1112e25e8f845900ab240644444848834d6478fe62c9e4a50e327"
    )


def test_a_cartesia_key_changes_with_everything_cartesia_is_sent() -> None:
    keys = {
        "language": key(cartesia(language="de")),
        "another language": key(cartesia(language="fr")),
        "model": key(cartesia(model="sonic-2")),
        "voice": key(cartesia(reference_id="voice-a")),
        "announcement voice": key(cartesia(), "voice-b"),
        "sample rate": key(cartesia(sample_rate=44100)),
        "API version": key(cartesia(cartesia_version="2024-11-13")),
        "local server's voice": key(Settings(tts={"provider": "cartesia"}, server={"voice": "de"})),
    }
    assert len(set(keys.values()) | {key(cartesia())}) == len(keys) + 1, keys


def test_a_cartesia_key_ignores_what_cartesia_is_not_sent(tmp_path: Path) -> None:
    sample = tmp_path / "sample.wav"
    sample.write_bytes(b"RIFF" + bytes(100))
    fish_only: dict[str, Any] = {
        "prosody": {"speed": 1.25, "volume": -6.0},
        "latency": "low",
        "opus_bitrate": 64,
        "mp3_bitrate": 64,
        "references": [{"audio": sample, "text": "The sample says this."}],
        "temperature": 0.31,
        "top_p": 0.91,
        "chunk_length": 151,
        "normalize": False,
        "max_buffer_delay_ms": 500,  # when generation starts, not what it says
    }
    base = key(cartesia())
    for field, value in fish_only.items():
        assert key(cartesia(**{field: value})) == base, field
    assert key(cartesia(), speed=1.3, volume_db=-5.0, latency="low") == base  # Fish prosody
    remote = {"url": "wss://api.cartesia.ai/tts/websocket", "reference_id": "voice-a"}
    assert key(Settings(tts={"provider": "cartesia", **remote}, server={"voice": "de"})) == key(
        cartesia(**remote)
    )  # the local server's default voice does not reach a remote provider
