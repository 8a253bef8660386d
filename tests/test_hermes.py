"""Hermes shapes: hermes/tts/say ↔ sayFinished, playBytes WAV ↔ playFinished.

The reference payloads below were produced by rhasspy-hermes 0.6.2 itself
(``TtsSay(...).payload()``); the package is not a test dependency because it pins
``paho-mqtt==1.5.0``, which conflicts with aiomqtt's ``paho-mqtt>=2.1``.
"""

from __future__ import annotations

import io
import json
import math
import struct
import wave

import pytest

from edgespeak.base.errors import ConfigError, PayloadError
from edgespeak.inlets.hermes.messages import (
    HermesTopics,
    PlayBytes,
    Say,
    SayRefused,
    parse_play_bytes,
    parse_say,
    play_finished,
    say_finished,
)
from edgespeak.inlets.payload import MAX_PAYLOAD_BYTES

SAY = "hermes/tts/say"
UUID = "4b1c5d2e-8f3a-4e6b-9c7d-0a1b2c3d4e5f"
# TtsSay(text="The washing machine is done.", site_id="kitchen", lang="en", id=UUID,
#        session_id="sess-42", volume=0.35).payload()
RHASSPY_SAY_FULL = (
    b'{"text": "The washing machine is done.", "siteId": "kitchen", "lang": "en", '
    b'"id": "4b1c5d2e-8f3a-4e6b-9c7d-0a1b2c3d4e5f", "sessionId": "sess-42", "volume": 0.35}'
)
# TtsSay(text="Ciao!", lang="it_IT").payload()
RHASSPY_SAY_MINIMAL = (
    b'{"text": "Ciao!", "siteId": "default", "lang": "it_IT", "id": null, '
    b'"sessionId": null, "volume": null}'
)


def say(payload: bytes | dict[str, object], site_id: str = "kitchen") -> Say | None:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_say(raw, site_id=site_id, received_at=42.5, topic=SAY)


def sine_s16(rate: int, seconds: float, freq: float, amp: float = 0.5) -> list[int]:
    n = int(rate * seconds)
    return [round(amp * 32767 * math.sin(2 * math.pi * freq * i / rate)) for i in range(n)]


def wav_bytes(frames: bytes, *, rate: int, channels: int = 1, width: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)
    return buf.getvalue()


def pack(samples: list[int]) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


# --- topics ---------------------------------------------------------------------------------


def test_topics_of_a_site() -> None:
    t = HermesTopics("kitchen")
    assert t.say == "hermes/tts/say"
    assert t.say_finished == "hermes/tts/sayFinished"
    assert t.play_bytes == "hermes/audioServer/kitchen/playBytes/+"
    assert t.play_finished == "hermes/audioServer/kitchen/playFinished"
    assert t.subscriptions == ["hermes/tts/say", "hermes/audioServer/kitchen/playBytes/+"]


@pytest.mark.parametrize("bad", ["", "a/b", "+", "site#"])
def test_topics_refuse_a_site_id_that_is_not_one_topic_level(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"hermes\.site_id"):
        HermesTopics(bad)


# --- hermes/tts/say -------------------------------------------------------------------------


def test_say_from_rhasspy_with_volume_id_and_session() -> None:
    s = say(RHASSPY_SAY_FULL)
    assert s is not None
    assert (s.hermes_id, s.session_id, s.site_id, s.lang) == (UUID, "sess-42", "kitchen", "en")
    ann = s.announcement
    assert (ann.text, ann.id, ann.id_given) == ("The washing machine is done.", UUID, True)
    assert (ann.volume, ann.received_at, ann.topic) == (0.35, 42.5, SAY)
    assert ann.voice is None  # lang is a language code, not a provider voice id
    assert (ann.priority, ann.ttl_s, ann.chime, ann.lead_in_ms) == ("normal", None, None, None)


def test_say_without_site_id_is_for_site_default() -> None:
    s = say({"text": "Hello"}, site_id="default")
    assert s is not None and s.site_id == "default"
    assert say({"text": "Hello"}, site_id="kitchen") is None
    assert say({"text": "Hello", "siteId": None}, site_id="default") is not None


def test_rhasspy_minimal_say_with_nulls() -> None:
    s = say(RHASSPY_SAY_MINIMAL, site_id="default")
    assert s is not None
    assert (s.hermes_id, s.session_id, s.lang) == (None, None, "it_IT")
    ann = s.announcement
    assert (ann.text, ann.volume, ann.id_given, len(ann.id)) == ("Ciao!", None, False, 12)
    other = say(RHASSPY_SAY_MINIMAL, site_id="default")
    assert other is not None and other.announcement.id != ann.id


def test_say_for_another_site_is_ignored_even_when_otherwise_invalid() -> None:
    assert say({"text": "Hi", "siteId": "bedroom"}) is None
    assert say({"siteId": "bedroom", "volume": 7, "text": 3}) is None


def test_say_text_is_stripped_and_unicode_kept() -> None:
    s = say({"text": "  Tür offen: 3 °C 🔥 \n", "siteId": "kitchen", "volume": 1})
    assert s is not None
    assert (s.announcement.text, s.announcement.volume) == ("Tür offen: 3 °C 🔥", 1.0)


def test_empty_hermes_id_gets_a_generated_id_but_is_echoed() -> None:
    s = say({"text": "Hi", "siteId": "kitchen", "id": "", "sessionId": ""})
    assert s is not None
    assert (s.announcement.id_given, len(s.announcement.id)) == (False, 12)
    assert json.loads(say_finished(s)) == {"siteId": "kitchen", "id": "", "sessionId": ""}


def test_unknown_fields_are_ignored() -> None:
    s = say({"text": "Hi", "siteId": "kitchen", "customData": {"a": [1]}})
    assert s is not None and s.announcement.text == "Hi"


@pytest.mark.parametrize(
    ("body", "field", "carries_id"),
    [
        ({"siteId": "kitchen", "id": "x1"}, "'text' is missing", True),
        ({"text": None, "siteId": "kitchen", "id": "x1"}, "'text' is missing", True),
        ({"text": "", "siteId": "kitchen", "id": "x1"}, "'text' is empty", True),
        ({"text": "  \n ", "siteId": "kitchen", "id": "x1"}, "'text' is empty", True),
        ({"text": "\u0007\u001b", "siteId": "kitchen", "id": "x1"}, "after removing", True),
        ({"text": "a" * 1001, "siteId": "kitchen", "id": "x1"}, "1001 characters", True),
        ({"text": 5, "siteId": "kitchen", "id": "x1"}, "'text' must be a string", True),
        ({"text": ["a"], "siteId": "kitchen"}, "'text' must be a string", False),
        ({"text": "Hi", "siteId": 3}, "'siteId' must be a string", False),
        ({"text": "Hi", "siteId": "kitchen", "id": 17}, "'id' must be a string", False),
        ({"text": "Hi", "siteId": "kitchen", "id": "x1", "sessionId": 1}, "'sessionId'", True),
        ({"text": "Hi", "siteId": "kitchen", "id": "x1", "lang": ["en"]}, "'lang'", True),
        ({"text": "Hi", "siteId": "kitchen", "id": "x1", "volume": "0.5"}, "'volume'", True),
        ({"text": "Hi", "siteId": "kitchen", "id": "x1", "volume": True}, "'volume'", True),
        ({"text": "Hi", "siteId": "kitchen", "id": "x1", "volume": 1.5}, "'volume'", True),
        ({"text": "Hi", "siteId": "kitchen", "id": "x1", "volume": -0.1}, "'volume'", True),
    ],
)
def test_malformed_say_names_the_field(
    body: dict[str, object], field: str, carries_id: bool
) -> None:
    with pytest.raises(PayloadError, match=field) as info:
        say(body)
    assert info.value.announcement_id == ("x1" if carries_id else None)


def test_a_say_for_us_that_cannot_be_spoken_carries_its_say_finished_reply() -> None:
    """Bad before: such a say got a failed event and no sayFinished, and a dialogue manager
    waiting for it waited for its timeout. A say whose ids cannot be read has nothing to echo."""
    ids = {"siteId": "kitchen", "id": "x1", "sessionId": "s1"}
    for bad in ({"text": ""}, {"text": "Hi", "volume": 1.5}, {"text": "Hi", "lang": ["en"]}):
        with pytest.raises(SayRefused) as refused:
            say(ids | bad)
        assert json.loads(refused.value.reply) == ids
        assert refused.value.announcement_id == "x1"
    for unreadable in ({"siteId": 3}, {"id": 17}, {"sessionId": 1}):
        with pytest.raises(PayloadError) as info:
            say(ids | {"text": ""} | unreadable)
        assert not isinstance(info.value, SayRefused)


def test_volume_nan_or_infinity_is_refused() -> None:
    for literal in ("NaN", "Infinity"):
        raw = f'{{"text": "Hi", "siteId": "kitchen", "volume": {literal}}}'.encode()
        with pytest.raises(PayloadError, match="'volume' must be between 0 and 1"):
            say(raw)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"text": "Hi", "siteId": "kitchen"', "malformed JSON"),
        (b"Hello there", "malformed JSON"),
        (b"", "malformed JSON"),
        (b'["text", "Hi"]', "must be an object"),
        (b'"Hi"', "must be an object"),
        (b'{"text": "Hi\xff"}', "not valid UTF-8"),
        (b'{"text": "' + b"a" * MAX_PAYLOAD_BYTES + b'"}', "limit"),
    ],
)
def test_undecodable_say_payloads(raw: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        say(raw)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[" * 10_000, "JSON is nested too deeply to decode"),
        (b'{"text": "Hi", "x": ' + b"[" * 10_000 + b"}", "JSON is nested too deeply"),
        (b'{"text": "Hi", "n": ' + b"1" * 5000 + b"}", "JSON cannot be decoded: Exceeds"),
    ],
)
def test_say_the_json_decoder_cannot_take_is_refused_saying_why(raw: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        say(raw)


@pytest.mark.parametrize("field", ["text", "id", "sessionId", "lang", "siteId"])
def test_say_with_a_lone_surrogate_escape_is_refused_naming_the_field(field: str) -> None:
    body = {"text": "Hi", "siteId": "kitchen", "id": "x1"} | {field: "a\ud800"}
    raw = json.dumps(body).encode()  # ASCII: the surrogate is a \ud800 escape
    with pytest.raises(PayloadError, match=f"field '{field}' is not valid Unicode") as info:
        say(raw)
    assert info.value.announcement_id == (None if field in ("id", "siteId") else "x1")


def test_say_finished_echoes_id_session_and_site() -> None:
    s = say(RHASSPY_SAY_FULL)
    assert s is not None
    # TtsSayFinished(site_id="kitchen", id=UUID, session_id="sess-42").payload() key order
    out = say_finished(s)
    assert list(json.loads(out).items()) == [
        ("siteId", "kitchen"),
        ("id", UUID),
        ("sessionId", "sess-42"),
    ]


def test_say_finished_has_nulls_like_rhasspy() -> None:
    s = say(RHASSPY_SAY_MINIMAL, site_id="default")
    assert s is not None
    # TtsSayFinished().payload() == '{"siteId": "default", "id": null, "sessionId": null}'
    assert say_finished(s) == b'{"siteId": "default", "id": null, "sessionId": null}'


# --- playBytes ------------------------------------------------------------------------------


def play_topic(site: str, request_id: str) -> str:
    return f"hermes/audioServer/{site}/playBytes/{request_id}"


@pytest.mark.parametrize("request_id", [UUID, "beep", "a-b-c_d.e"])
def test_play_bytes_mono_16bit_is_byte_exact(request_id: str) -> None:
    for rate in (22050, 44100):
        frames = pack(sine_s16(rate, 0.25, 440.0))
        play = parse_play_bytes(
            play_topic("kitchen", request_id), wav_bytes(frames, rate=rate), site_id="kitchen"
        )
        assert play == PlayBytes(request_id=request_id, site_id="kitchen", pcm=frames, rate_hz=rate)


def test_play_bytes_stereo_is_averaged_to_mono() -> None:
    rate = 44100
    left = sine_s16(rate, 0.1, 440.0, amp=0.6)
    right = sine_s16(rate, 0.1, 660.0, amp=0.2)
    frames = pack([s for pair in zip(left, right, strict=True) for s in pair])
    play = parse_play_bytes(
        play_topic("kitchen", "st"), wav_bytes(frames, rate=rate, channels=2), site_id="kitchen"
    )
    assert play is not None and play.rate_hz == rate
    got = struct.unpack(f"<{len(left)}h", play.pcm)
    want = [(a + b) / 2 for a, b in zip(left, right, strict=True)]
    assert len(got) == len(want)
    assert max(abs(g - w) for g, w in zip(got, want, strict=True)) <= 1


def test_play_bytes_stereo_22050_keeps_its_rate() -> None:
    frames = pack([1000, -1000] * 2205)  # L = 1000, R = -1000 → silence
    play = parse_play_bytes(
        play_topic("kitchen", "x"), wav_bytes(frames, rate=22050, channels=2), site_id="kitchen"
    )
    assert play is not None
    assert (play.rate_hz, len(play.pcm)) == (22050, 2205 * 2)
    assert set(play.pcm) == {0}


@pytest.mark.parametrize(
    "topic",
    [
        play_topic("bedroom", "r1"),
        "hermes/audioServer/kitchen/playFinished",
        "hermes/audioServer/kitchen/playBytes",
        "hermes/audioServer/kitchen/playBytes/r1/extra",
        "hermes/audioServer/kitchen/audioFrame",
        "hermes/tts/say",
        "edgespeak/kitchen/announce",
    ],
)
def test_play_bytes_topics_that_are_not_ours(topic: str) -> None:
    assert parse_play_bytes(topic, b"not even looked at", site_id="kitchen") is None


@pytest.mark.parametrize(
    "payload",
    [b"", b"garbage bytes, not RIFF", b"RIFF\x00\x00\x00\x00WAVE", wav_bytes(b"", rate=16000)],
)
def test_play_bytes_garbage_raises_with_the_request_id(payload: bytes) -> None:
    with pytest.raises(PayloadError, match=f"playBytes {UUID}") as info:
        parse_play_bytes(play_topic("kitchen", UUID), payload, site_id="kitchen")
    assert info.value.announcement_id == UUID


def test_play_finished_payload() -> None:
    play = PlayBytes(request_id=UUID, site_id="kitchen", pcm=b"\0\0", rate_hz=22050)
    assert json.loads(play_finished(play)) == {
        "id": UUID,
        "siteId": "kitchen",
        "sessionId": UUID,
    }
    assert HermesTopics("kitchen").play_finished == "hermes/audioServer/kitchen/playFinished"
