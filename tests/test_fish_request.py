"""The Fish TTSRequest from [tts] and from announcements: ranges, clear errors, what reaches
the wire (checked against the official SDK's own TTSRequest model), and the phrase-cache key."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import ormsgpack
import pytest
from aiohttp import web
from fishaudio.types import TTSRequest as SdkRequest

from edgespeak.base.errors import ConfigError, PayloadError, TtsProtocolError
from edgespeak.config import ServerConfig, Settings, load_config
from edgespeak.inlets.payload import parse_payload
from edgespeak.providers.fish import FishLiveClient
from edgespeak.providers.fish_request import (
    Overrides,
    announcement_request,
    provider_request,
    tts_request,
)
from edgespeak.server.app import build_app
from edgespeak.sources.cache import phrase_key
from edgespeak.wire import fish as fp
from tests.helpers import serving_app, serving_live

URL = "ws://127.0.0.1:1/v1/tts/live"
SAMPLE = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(64))  # any bytes: sent as they are


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith("EDGESPEAK_"):
            monkeypatch.delenv(name)


def load(tmp_path: Path, tts_toml: str) -> Settings:
    path = tmp_path / "config.toml"
    path.write_text(f"[tts]\n{tts_toml}\n")
    return load_config(path)


def full_config(tmp_path: Path, **changes: str) -> Settings:
    """A [tts] with every TTSRequest key set away from its default; ``changes`` replace keys
    (an empty string leaves the key out)."""
    sample = tmp_path / "sample.wav"
    sample.write_bytes(SAMPLE)
    keys = {
        "format": '"opus"',
        "reference_id": '"voice-7"',
        "references": f'[{{ audio = "{sample}", text = "The sample says this." }}]',
        "mp3_bitrate": "192",
        "opus_bitrate": "48",
        "latency": '"normal"',
        "prosody": "{ speed = 1.25, volume = -6.5 }",
        "chunk_length": "150",
        "normalize": "false",
        "temperature": "0.3",
        "top_p": "0.9",
    } | changes
    return load(tmp_path, "\n".join(f"{k} = {v}" for k, v in keys.items() if v))


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('format = "mp3"', r"tts\.format: .*mp3 cannot be played.*pcm, wav, opus"),
        ('format = "flac"', r"tts\.format: Input should be 'pcm', 'wav' or 'opus'"),
        ("mp3_bitrate = 96", r"tts\.mp3_bitrate: Input should be 64, 128 or 192"),
        ("opus_bitrate = 40", r"tts\.opus_bitrate: .*kbps 24, 32, 48 or 64, or bits/s"),
        ("opus_bitrate = 96000", r"tts\.opus_bitrate: .*-1000"),
        ('latency = "fast"', r"tts\.latency: Input should be 'low', 'normal' or 'balanced'"),
        ("prosody = { speed = 2.5 }", r"tts\.prosody\.speed: .*less than or equal to 2"),
        ("prosody = { volume = -21 }", r"tts\.prosody\.volume: .*greater than or equal to -20"),
        ("prosody = { pitch = 3 }", r"tts\.prosody\.pitch: unknown key"),
        ("chunk_length = 99", r"tts\.chunk_length: .*greater than or equal to 100"),
        ("chunk_length = 301", r"tts\.chunk_length: .*less than or equal to 300"),
        ("temperature = 1.5", r"tts\.temperature: .*less than or equal to 1"),
        ("top_p = -0.1", r"tts\.top_p: .*greater than or equal to 0"),
        ('normalize = "maybe"', r"tts\.normalize: Input should be a valid boolean"),
        ('references = [{ audio = "/nonexistent/x.wav", text = "Hi" }]',
         r"tts\.references\.0: .*cannot read reference audio /nonexistent/x\.wav: No such file"),
        ('references = [{ audio = "/etc/hostname" }]', r"tts\.references\.0\.text: Field required"),
    ],
)  # fmt: skip
def test_bad_tts_values_are_refused_naming_the_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, toml)


def test_an_empty_reference_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"reference audio .*empty\.wav is empty"):
        load(tmp_path, f'references = [{{ audio = "{tmp_path / "empty.wav"}", text = "x" }}]')


@pytest.mark.parametrize("value", [-1000, 24, 32, 48, 64, 24000, 32000, 64000])
def test_opus_bitrate_takes_both_conventions_and_sends_it_as_written(
    tmp_path: Path, value: int
) -> None:
    settings = load(tmp_path, f'format = "opus"\nopus_bitrate = {value}')
    assert provider_request(settings, None)["opus_bitrate"] == value


def test_every_tts_key_reaches_the_request_in_the_sdks_shape(tmp_path: Path) -> None:
    settings = full_config(tmp_path)
    sent = provider_request(settings, None)
    assert sent == {
        "text": "", "format": "opus", "sample_rate": 22050, "mp3_bitrate": 192,
        "opus_bitrate": 48, "references": [{"audio": SAMPLE, "text": "The sample says this."}],
        "reference_id": "voice-7", "normalize": False, "latency": "normal",
        "prosody": {"speed": 1.25, "volume": -6.5}, "chunk_length": 150, "top_p": 0.9,
        "temperature": 0.3, "max_new_tokens": 1024, "repetition_penalty": 1.2,
        "min_chunk_length": 50, "condition_on_previous_chunks": True,
        "early_stop_threshold": 1.0,
    }  # fmt: skip
    # The official SDK's own model takes it field for field (same names, types and ranges).
    assert SdkRequest.model_validate(sent).model_dump() == sent


def test_the_reference_audio_is_read_once_at_load(tmp_path: Path) -> None:
    settings = full_config(tmp_path)
    (tmp_path / "sample.wav").unlink()  # gone after load: what was read is still sent
    assert provider_request(settings, None)["references"][0]["audio"] == SAMPLE


def test_announcement_fields_override_the_config(tmp_path: Path) -> None:
    settings = full_config(tmp_path)
    body = {"text": "Hi", "voice": "v2", "speed": 0.8, "volume_db": 4, "latency": "low"}
    sent = announcement_request(settings, parse_payload(json.dumps(body).encode()))
    assert (sent["reference_id"], sent["prosody"], sent["latency"]) == (
        "v2", {"speed": 0.8, "volume": 4.0}, "low"
    )  # fmt: skip
    only_speed = announcement_request(settings, parse_payload(b'{"text": "Hi", "speed": 2}'))
    assert only_speed["prosody"] == {"speed": 2.0, "volume": -6.5}  # volume from [tts]
    plain = tts_request(Settings().tts, Overrides(volume_db=-3))
    assert plain["prosody"] == {"speed": 1.0, "volume": -3.0}
    assert tts_request(Settings().tts)["prosody"] is None  # natural prosody unless asked


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("speed", 0.4, "field 'speed' must be greater than or equal to 0.5"),
        ("speed", "fast", "field 'speed' must be a number"),
        ("volume_db", 21, "field 'volume_db' must be less than or equal to 20"),
        ("latency", "instant", "field 'latency' must be one of 'low', 'normal' or 'balanced'"),
    ],
)
def test_bad_announcement_provider_fields_are_named(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(PayloadError, match=message):
        parse_payload(json.dumps({"text": "Hi", "id": "p1", field: value}).encode())


def key(settings: Settings, text: str = "Door open.", **overrides: Any) -> str:
    request = provider_request(settings, None, Overrides(**overrides))
    return phrase_key(settings, URL, text, request=request)


def test_the_cache_key_changes_with_every_field_that_changes_the_audio(tmp_path: Path) -> None:
    base = full_config(tmp_path)
    other_sample = tmp_path / "other.wav"
    other_sample.write_bytes(SAMPLE + b"x")
    variants = {
        "reference_id": '"voice-8"',
        "references": f'[{{ audio = "{other_sample}", text = "The sample says this." }}]',
        "opus_bitrate": "64",
        "latency": '"balanced"',
        "prosody": "{ speed = 1.25, volume = -6 }",
        "chunk_length": "151",
        "normalize": "true",
        "temperature": "0.31",
        "top_p": "0.91",
        "format": '"pcm"',
    }
    keys = {name: key(full_config(tmp_path, **{name: v})) for name, v in variants.items()}
    keys["speed override"] = key(base, speed=1.3)
    keys["volume override"] = key(base, volume_db=-5.0)
    keys["latency override"] = key(base, latency="low")
    keys["voice override"] = key(base, voice="voice-9")
    keys["transcript"] = key(full_config(tmp_path, references=variants["references"]
                                         .replace(str(other_sample), str(tmp_path / "sample.wav"))
                                         .replace("this.", "that.")))  # fmt: skip
    assert len(set(keys.values()) | {key(base)}) == len(keys) + 1, keys


def test_the_cache_key_ignores_what_does_not_change_the_audio(tmp_path: Path) -> None:
    base = full_config(tmp_path)
    assert key(full_config(tmp_path, opus_bitrate="48000")) == key(base)  # kbps or bps
    assert key(full_config(tmp_path, mp3_bitrate="64")) == key(base)  # not mp3
    assert key(base, text="Door   open. ") == key(base)  # whitespace folded
    neutral = full_config(tmp_path, prosody="{ speed = 1.0, volume = 0 }")
    assert key(neutral) == key(full_config(tmp_path, prosody="")) != key(base)
    assert key(full_config(tmp_path, prosody="{}")) == key(neutral)


async def test_emotion_markers_reach_the_server_verbatim() -> None:
    texts: list[str] = []

    async def record(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            body = ormsgpack.unpackb(msg.data)
            if body["event"] == "text":
                texts.append(body["text"])
            elif body["event"] == "stop":
                await ws.send_bytes(fp.audio(b"\0\0"))
                await ws.send_bytes(fp.finish("stop"))
        return ws

    payload = "(happy) Welcome home!  (whispering) The (laughing) cat is fed. (sigh)"
    ann = parse_payload(json.dumps({"text": payload, "speed": 1.1}).encode())
    async with serving_live(record) as url, FishLiveClient(url) as client:
        request = announcement_request(Settings(), ann)
        assert [c async for c in client.stream(ann.text, request)] == [b"\0\0"]
    assert "".join(texts) == payload
    assert texts[0] == "(happy) Welcome home!  "  # the first sentence, flushed on its own


async def test_our_server_accepts_the_full_request_and_refuses_out_of_range_fields(
    tmp_path: Path,
) -> None:
    settings = full_config(tmp_path, format='"pcm"', reference_id='"en-us"')
    good = provider_request(settings, None)
    bad = good | {"prosody": {"speed": 3.0, "volume": 0}}
    async with (
        serving_app(build_app(ServerConfig(voice="en"))) as url,
        FishLiveClient(url) as client,
    ):
        audio = b"".join([c async for c in client.stream("Hello there.", good)])
        assert len(audio) > 22050  # half a second of speech came back
        with pytest.raises(TtsProtocolError, match=r"'prosody\.speed'.*less than or equal to 2"):
            _ = [c async for c in client.stream("Hello there.", bad)]
