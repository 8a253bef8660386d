"""parse_payload: plain text and JSON announce payloads, and every way they can be refused."""

from __future__ import annotations

import json

import pytest

from edgespeak.base.announcement import Announcement
from edgespeak.base.errors import PayloadError
from edgespeak.inlets.payload import MAX_PAYLOAD_BYTES, parse_payload


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


def test_json_without_options_or_with_some_is_the_announcement_with_just_those() -> None:
    """Options not given (or null) keep the Announcement's defaults, whether the payload has
    none (no validation needed) or some."""
    plain = parse_payload(b'{"text": "Hi", "id": "a", "volume": null}', received_at=2.0, topic="t")
    assert plain == Announcement(text="Hi", id="a", id_given=True, received_at=2.0, topic="t")
    some = parse_payload(b'{"text": "Hi", "id": "a", "volume": 0.5, "sync": false}')
    assert some == Announcement(text="Hi", id="a", id_given=True, volume=0.5, sync=False)


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


DEEP = b"[" * 10_000  # past the decoder's recursion limit, within the 16 KiB payload limit
LONG_INT = b"1" * 5000  # past Python's 4300-digit limit on int() of a string


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (DEEP, "JSON is nested too deeply to decode"),
        (b"[" * 5000 + b"]" * 5000, "JSON is nested too deeply to decode"),  # well-formed
        (b'{"text": "Hi", "x": ' + DEEP + b"}", "JSON is nested too deeply to decode"),
        (b"[" + LONG_INT + b"]", "JSON cannot be decoded: Exceeds the limit (4300 digits)"),
        (b'{"text": "Hi", "n": ' + LONG_INT + b"}", "JSON cannot be decoded: Exceeds the limit"),
    ],
)
def test_json_the_decoder_itself_cannot_take_is_refused_saying_why(
    payload: bytes, message: str
) -> None:
    """Not only malformed JSON: nesting past the recursion limit (RecursionError) and a
    number past Python's int digit limit (ValueError) are refusals too, not internal errors."""
    with pytest.raises(PayloadError) as info:
        parse_payload(payload)
    assert str(info.value).startswith(message), info.value
    assert "set_int_max_str_digits" not in str(info.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"text": "Hi \\ud800 there."}', r"text is not valid Unicode: a lone surrogate "
         r"\(\\ud800 at character 4\)"),
        (b'{"text": "Hi.", "id": "a\\udfff"}', "field 'id' is not valid Unicode"),
        (b'{"text": "Hi.", "voice": "\\ud800"}', "field 'voice' is not valid Unicode"),
    ],
)  # fmt: skip
def test_a_lone_surrogate_escape_is_refused_naming_the_field(body: bytes, message: str) -> None:
    """JSON can spell half a surrogate pair ("\\ud800"), which is no character: it cannot be
    encoded as UTF-8 for the TTS request, the cache key or a reply, so it is refused here."""
    with pytest.raises(PayloadError, match=message):
        parse_payload(body)


def test_malformed_json_error_says_where() -> None:
    with pytest.raises(PayloadError, match=r"malformed JSON \(.*line 1 column \d+\)"):
        parse_payload(b"{oops")


def test_payload_byte_limit_is_configurable() -> None:
    assert MAX_PAYLOAD_BYTES == 16 * 1024  # the documented [limits] default
    just = b"a" * 2000
    assert parse_payload(just, max_bytes=2000, max_chars=2000).text == just.decode()
    with pytest.raises(PayloadError, match=r"2001 bytes; the limit is 2000 \(\[limits\]"):
        parse_payload(just + b"a", max_bytes=2000, max_chars=5000)
    with pytest.raises(PayloadError, match="17000 bytes"):
        parse_payload(b"a" * 17000)


def test_text_character_limit_counts_characters_not_bytes() -> None:
    umlauts = "ä" * 1000  # 2000 bytes of UTF-8, 1000 characters
    assert parse_payload(umlauts.encode()).text == umlauts
    with pytest.raises(PayloadError, match="1001 characters; the limit is 1000") as info:
        parse_payload(json.dumps({"id": "long", "text": umlauts + "ö"}).encode())
    assert info.value.announcement_id == "long"
    with pytest.raises(PayloadError, match="11 characters; the limit is 10"):
        parse_payload(b"Hello world", max_chars=10)


def test_control_characters_are_removed_and_line_breaks_become_spaces() -> None:
    ann = parse_payload(b"\x1b[31mDoor\x07bell\x00 at\r\nthe\tfront\x7f\xc2\x9b door")
    assert ann.text == "[31mDoorbell at  the front door"
    body = {"id": "c1", "text": "Wash\u2028done\u0085now\u0000"}
    assert parse_payload(json.dumps(body).encode()).text == "Wash done now"
    assert parse_payload("Grüße, 東京 🙂".encode()).text == "Grüße, 東京 🙂"  # not controls


def test_text_of_only_control_characters_is_refused_with_its_reason() -> None:
    with pytest.raises(PayloadError, match="text is empty after removing control characters"):
        parse_payload(b"\x00\x07\x1b")
    with pytest.raises(PayloadError, match="after removing control") as info:
        parse_payload(json.dumps({"id": "c2", "text": "\u0000\u0007"}).encode())
    assert info.value.announcement_id == "c2"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"id": "door\nbell", "text": "Hi"}, "'id' contains control characters"),
        ({"id": "x" * 129, "text": "Hi"}, "'id' is over 128 characters"),
        ({"id": "v", "text": "Hi", "voice": "en\x1b"}, "'voice' contains control characters"),
        ({"id": "v", "text": "Hi", "voice": "e" * 200}, "'voice' is over 128 characters"),
    ],
)
def test_ids_and_voices_must_be_names(body: dict[str, object], message: str) -> None:
    with pytest.raises(PayloadError, match=message) as info:
        parse_payload(json.dumps(body).encode())
    # A bad id is not echoed into the failed event; a bad voice keeps the good id.
    assert info.value.announcement_id == (None if "'id'" in message else "v")
