"""parse_payload: plain text and JSON announce payloads, and every way they can be refused."""

from __future__ import annotations

import json

import pytest

from edgespeak.announcement import MAX_PAYLOAD_BYTES, parse_payload
from edgespeak.errors import PayloadError


def test_plain_text_is_stripped_and_gets_an_id() -> None:
    ann = parse_payload(b"  Dinner is ready.\n", received_at=12.5, topic="edgespeak/all/announce")
    assert ann.text == "Dinner is ready."
    assert ann.voice is None and len(ann.id) == 12
    assert (ann.received_at, ann.topic) == (12.5, "edgespeak/all/announce")
    assert parse_payload(b"Hi").id != parse_payload(b"Hi").id


def test_plain_text_keeps_unicode_and_brackets() -> None:
    text = "Tür offen: 3 °C (happy) 🔥"
    assert parse_payload(f" {text} ".encode()).text == text
    assert parse_payload(b"[Kitchen] the oven is hot").text == "[Kitchen] the oven is hot"


def test_json_with_text_id_and_voice() -> None:
    ann = parse_payload(b'  {"text": "  Front door open. ", "id": "door-1", "voice": "en-us"} ')
    assert (ann.text, ann.id, ann.voice) == ("Front door open.", "door-1", "en-us")


def test_json_with_only_text() -> None:
    ann = parse_payload(json.dumps({"text": "Hello"}).encode())
    assert (ann.text, ann.voice, len(ann.id)) == ("Hello", None, 12)


def test_json_with_unknown_fields_is_accepted() -> None:
    body = {"text": "Hello", "id": "a1", "title": "Door", "extra": {"x": [1]}}
    ann = parse_payload(json.dumps(body).encode())
    assert (ann.text, ann.id, ann.priority, ann.volume) == ("Hello", "a1", "normal", None)


def test_json_scheduling_and_playback_fields() -> None:
    body = {"text": "Smoke!", "id": "s1", "priority": "critical", "ttl_s": 30, "volume": 0.5,
            "chime": "doorbell", "lead_in_ms": 250, "voice": None}  # fmt: skip
    ann = parse_payload(json.dumps(body).encode())
    assert (ann.priority, ann.rank, ann.ttl_s, ann.volume) == ("critical", 3, 30.0, 0.5)
    assert (ann.chime, ann.lead_in_ms, ann.voice, ann.id_given) == ("doorbell", 250, None, True)
    plain = parse_payload(b"Hello")
    assert (plain.priority, plain.ttl_s, plain.chime, plain.id_given) == (
        "normal",
        None,
        None,
        False,
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("priority", "urgent", "field 'priority' must be one of 'low', 'normal', 'high'"),
        ("priority", 3, "field 'priority' must be one of"),
        ("ttl_s", "30", "field 'ttl_s' must be a number"),
        ("ttl_s", 0, "field 'ttl_s' must be greater than 0"),
        ("volume", 1.5, "field 'volume' must be less than or equal to 1"),
        ("volume", True, "field 'volume' must be a number"),
        ("chime", 7, "field 'chime' must be a string"),
        ("lead_in_ms", 2.5, "field 'lead_in_ms' must be an integer"),
        ("lead_in_ms", -1, "field 'lead_in_ms' must be greater than or equal to 0"),
    ],
)
def test_wrongly_typed_fields_are_named(field: str, value: object, message: str) -> None:
    with pytest.raises(PayloadError, match=message) as info:
        parse_payload(json.dumps({"text": "Hi", "id": "f1", field: value}).encode())
    assert info.value.announcement_id == "f1"


def test_json_empty_voice_means_the_default_voice() -> None:
    assert parse_payload(b'{"text": "Hi", "voice": ""}').voice is None


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'{"text": "Hi", ', "malformed JSON"),
        (b"{not json at all, just braces}", "malformed JSON"),
        (b'{"text": "Hi"} trailing', "malformed JSON"),
        (b"", "text is empty"),
        (b" \n\t ", "text is empty"),
        (b"\xff\xfehello", "not valid UTF-8"),
        (b"ok \xc3", "not valid UTF-8"),
        (b'{"id": 7, "text": "Hi"}', "'id' must be a string"),
        (b"{}", "'text' is missing"),
    ],
)
def test_refused_payloads_without_an_id(payload: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message) as info:
        parse_payload(payload)
    assert info.value.announcement_id is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"id": "a7"}, "'text' is missing"),
        ({"id": "a7", "text": None}, "'text' is missing"),
        ({"id": "a7", "text": 42}, "'text' must be a string"),
        ({"id": "a7", "text": ["Hi"]}, "'text' must be a string"),
        ({"id": "a7", "text": ""}, "text is empty"),
        ({"id": "a7", "text": "   \n"}, "text is empty"),
        ({"id": "a7", "text": "Hi", "voice": 3}, "'voice' must be a string"),
        ({"id": "a7", "text": "Hi", "voice": {"id": "x"}}, "'voice' must be a string"),
    ],
)
def test_refused_json_carries_the_announcement_id(body: dict[str, object], message: str) -> None:
    with pytest.raises(PayloadError, match=message) as info:
        parse_payload(json.dumps(body).encode())
    assert info.value.announcement_id == "a7"


@pytest.mark.parametrize("payload", [b'["Dinner is ready"]', b'[{"text": "Hi"}]', b"[]"])
def test_json_that_is_not_an_object_is_refused(payload: bytes) -> None:
    with pytest.raises(PayloadError, match="must be an object"):
        parse_payload(payload)


def test_malformed_json_error_says_where() -> None:
    with pytest.raises(PayloadError, match=r"malformed JSON \(.*line 1 column \d+\)"):
        parse_payload(b"{oops")


def test_size_limit_is_64_kib() -> None:
    assert MAX_PAYLOAD_BYTES == 64 * 1024
    assert len(parse_payload(b"a" * MAX_PAYLOAD_BYTES).text) == MAX_PAYLOAD_BYTES
    with pytest.raises(PayloadError, match=f"{MAX_PAYLOAD_BYTES + 1} bytes"):
        parse_payload(b"a" * (MAX_PAYLOAD_BYTES + 1))
    big_json = json.dumps({"id": "big", "text": "a" * MAX_PAYLOAD_BYTES}).encode()
    with pytest.raises(PayloadError, match="limit"):
        parse_payload(big_json)
