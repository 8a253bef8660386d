"""Property-based fuzzing (hypothesis): the announce payload parser, the Hermes say parser, and
the local server's protocol handler fed arbitrary MessagePack and bytes over a real WebSocket.

Properties: nothing but PayloadError escapes a parser, and each refusal is specific (it names
a field or a limit, or says what is wrong with the JSON or the encoding); what is accepted is
clean (text within its limit, no control characters, ids that are names). The server never
lets an exception escape its handler (no error logged, no traceback), answers every frame it
cannot decode with a ``finish`` error saying so, and still serves a valid session on the same
connection afterwards.

Examples are derandomized by default so the suite is deterministic; ``HYPOTHESIS_PROFILE=
explore`` runs many more, randomly (``pytest tests/test_fuzz.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import unicodedata
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import ormsgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgespeak.base.announcement import PRIORITY_RANK, Announcement
from edgespeak.base.errors import PayloadError, TtsProtocolError
from edgespeak.config import ServerConfig
from edgespeak.inlets.hermes.messages import parse_say, say_finished
from edgespeak.inlets.payload import parse_payload
from edgespeak.server.app import build_app
from edgespeak.wire import fish as fp
from tests.helpers import serving_app

settings.register_profile(
    "edgespeak", max_examples=150, derandomize=True, deadline=None, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
settings.register_profile("explore", parent=settings.get_profile("edgespeak"),
                          max_examples=2000, derandomize=False)  # fmt: skip
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "edgespeak"))

SITE = "kitchen"
STOP_MARKER = "'stop' before 'start'"  # the server's errors outside a session
FLUSH_MARKER = "'flush' before 'start'"
# Every refusal names a field or a limit, or says what is wrong with the JSON or encoding.
SPECIFIC = re.compile(
    r"^(field '[A-Za-z_]+' .+"
    r"|payload is \d+ bytes; the limit is \d+ \(\[limits\] max_payload_bytes\)"
    r"|payload is not valid UTF-8 \(byte \d+\)"
    r"|malformed JSON \(.+; line \d+ column \d+\)"
    r"|JSON payload must be an object.*"
    r"|JSON is nested too deeply to decode"
    r"|JSON cannot be decoded: .+"
    r"|text is empty( after removing control characters)?"
    r"|text is not valid Unicode: a lone surrogate \(.+\)"
    r"|text is \d+ characters; the limit is \d+ \(\[limits\] max_text_chars\))$",
    re.DOTALL,
)

# --- strategies --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=8,
)  # fmt: skip
texts = st.text(max_size=60) | st.sampled_from(["Hello.", " ", "\x1b[31m", "a\x00b", "\n\t"])
word = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
any_value = st.one_of(
    word,
    st.text("ab", min_size=125, max_size=135),  # around the 128-character limit on names
    st.text(max_size=12),  # control characters, anything (st.text() leaves surrogates out)
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),  # lone surrogates
    st.integers(-10, 10_000) | st.floats() | st.sampled_from([0, 1, 0.5, 5000, 5001]),
    texts,
    json_values,
)
ANNOUNCE_FIELDS = ["text", "id", "voice", "priority", "ttl_s", "volume", "chime", "lead_in_ms"]
valid_announce = st.fixed_dictionaries(
    {"text": st.just("Hello.")},
    optional={
        "id": word, "voice": word, "priority": st.sampled_from(list(PRIORITY_RANK)),
        "ttl_s": st.floats(0.1, 600), "volume": st.floats(0, 1), "chime": word,
        "lead_in_ms": st.integers(0, 5000),
    },
)  # fmt: skip
SAY_FIELDS = ["text", "siteId", "id", "sessionId", "lang", "volume"]
valid_say = st.fixed_dictionaries(
    {"text": st.just("Hello."), "siteId": st.just(SITE)},
    optional={"id": word, "sessionId": word, "lang": word, "volume": st.floats(0, 1)},
)


def as_json(obj: Any, ascii_only: bool) -> bytes:
    """JSON of ``obj``: a lone surrogate as a ``\\ud800`` escape, or (not ASCII) as the bytes
    of its code point, which is not valid UTF-8."""
    return json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


payloads = (  # anything: bytes, text, any JSON, objects with any of the fields
    st.binary(max_size=80)
    | texts.map(lambda t: t.encode())
    | st.builds(as_json, json_values, st.booleans())
    | st.builds(
        as_json,
        st.dictionaries(st.sampled_from([*ANNOUNCE_FIELDS, *SAY_FIELDS, "other"]), any_value),
        st.booleans(),
    )
)  # fmt: skip
limits = st.fixed_dictionaries({
    "max_bytes": st.integers(8, 400) | st.just(16384),
    "max_chars": st.integers(1, 50) | st.just(1000),
})  # fmt: skip

# --- parsers -------------------------------------------------------------------------------


def no_controls(text: str) -> bool:
    return not any(unicodedata.category(c) == "Cc" for c in text)


def is_clean(text: str) -> bool:
    return bool(text) and text == text.strip() and no_controls(text)


def is_name(text: str) -> bool:
    """An id or voice: 1 to 128 characters, no control characters (spaces are kept)."""
    return 0 < len(text) <= 128 and no_controls(text)


def check_refusal(exc: PayloadError, payload: bytes) -> None:
    message = str(exc)
    assert SPECIFIC.match(message), f"not specific: {message!r} for {payload!r}"
    named = re.match(r"field '([A-Za-z_]+)'", message)
    if named is not None:  # it names a field the payload has (or the missing text)
        obj = json.loads(payload)
        assert named[1] in obj or named[1] == "text", (message, obj)


def check_announcement(ann: Announcement, max_chars: int) -> None:
    assert is_clean(ann.text) and len(ann.text) <= max_chars, ann
    assert ann.id, ann
    for text in (ann.text, ann.id, ann.voice or ""):
        text.encode("utf-8")  # no lone surrogate: every string can be sent and stored
    assert ann.priority in PRIORITY_RANK
    assert ann.volume is None or 0.0 <= ann.volume <= 1.0
    assert ann.ttl_s is None or ann.ttl_s > 0
    assert ann.lead_in_ms is None or 0 <= ann.lead_in_ms <= 5000


def parse_announce(payload: bytes, limit: dict[str, int]) -> Announcement | None:
    """parse_payload's announcement (checked), or None for a refusal (checked)."""
    try:
        ann = parse_payload(payload, **limit)
    except PayloadError as exc:
        check_refusal(exc, payload)
        return None
    check_announcement(ann, limit["max_chars"])
    if ann.id_given:  # a name: Hermes ids are not, they are echoed as received
        assert is_name(ann.id), ann
    assert ann.voice is None or is_name(ann.voice), ann
    return ann


def parse_hermes(payload: bytes, limit: dict[str, int]) -> Announcement | None:
    """parse_say's announcement (checked), or None for a refusal or another site's."""
    try:
        say = parse_say(payload, site_id=SITE, received_at=0.0, topic="hermes/tts/say", **limit)
    except PayloadError as exc:
        check_refusal(exc, payload)
        return None
    if say is None:  # another site's: not validated further
        site = json.loads(payload).get("siteId")
        assert (site if site is not None else "default") != SITE
        return None
    check_announcement(say.announcement, limit["max_chars"])
    assert say.site_id == SITE
    assert json.loads(say_finished(say))["sessionId"] == say.session_id  # the reply can be sent
    assert not say.hermes_id or say.announcement.id == say.hermes_id  # echoed in sayFinished
    return say.announcement


PARSER_EXAMPLES = settings(max_examples=settings.default.max_examples * 4)  # ~1 ms each
DEFAULT_LIMITS = {"max_bytes": 16384, "max_chars": 1000}


@PARSER_EXAMPLES
@given(payload=payloads, limit=limits)
def test_any_payload_parses_or_is_refused_specifically(
    payload: bytes, limit: dict[str, int]
) -> None:
    parse_announce(payload, limit)
    parse_hermes(payload, limit)


@PARSER_EXAMPLES
@given(base=valid_announce, field=st.sampled_from(ANNOUNCE_FIELDS), value=any_value)
def test_one_bad_announce_field_is_refused_naming_it(
    base: dict[str, Any], field: str, value: Any
) -> None:
    payload = json.dumps(base | {field: value}).encode()
    assert parse_announce(json.dumps(base).encode(), DEFAULT_LIMITS) is not None
    if parse_announce(payload, DEFAULT_LIMITS) is None:  # refused: because of that field
        with pytest.raises(PayloadError, match=f"^(field '{field}'|{field} )"):
            parse_payload(payload)


@PARSER_EXAMPLES
@given(base=valid_say, field=st.sampled_from(SAY_FIELDS), value=any_value)
def test_one_bad_hermes_say_field_is_refused_naming_it(
    base: dict[str, Any], field: str, value: Any
) -> None:
    payload = json.dumps(base | {field: value}).encode()
    assert parse_hermes(json.dumps(base).encode(), DEFAULT_LIMITS) is not None
    if parse_hermes(payload, DEFAULT_LIMITS) is None and field != "siteId":
        with pytest.raises(PayloadError, match=f"^field '{field}'"):
            parse_say(payload, site_id=SITE, received_at=0.0, topic="hermes/tts/say")


# --- the server's protocol handler ---------------------------------------------------------

msgpack_scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=16) | st.binary(max_size=16)
)  # fmt: skip
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8) | st.integers(-5, 5), inner, max_size=4),
    max_leaves=8,
)  # fmt: skip
requests = st.fixed_dictionaries(
    {},
    optional={
        "format": st.sampled_from(["pcm", "wav", "opus", "mp3"]) | msgpack_scalars,
        "sample_rate": st.sampled_from([None, 8000, 22050, 48000]) | msgpack_scalars,
        "reference_id": st.sampled_from([None, "", "en", "en-us"]) | msgpack_scalars,
        "opus_bitrate": st.sampled_from([-1000, 24000]) | msgpack_scalars,
        "latency": st.sampled_from(["normal", "balanced"]) | msgpack_scalars,
        "text": st.text(max_size=8) | msgpack_scalars,
    },
)
events = st.one_of(
    st.sampled_from(["start", "text", "flush", "stop"]),  # the client's, most often
    st.sampled_from(["audio", "finish", "log", "Start", ""]),
    msgpack_scalars,
)
messages = st.fixed_dictionaries(
    {"event": events},
    optional={"request": requests | msgpack_values, "text": st.text(max_size=40) | msgpack_values},
)


def pack(value: Any) -> bytes:
    return ormsgpack.packb(value, option=ormsgpack.OPT_NON_STR_KEYS)


client_messages = st.one_of(  # the client's events with arbitrary bodies: reach the sessions
    st.builds(lambda r: {"event": "start", "request": r}, requests | msgpack_values),
    st.builds(lambda t: {"event": "text", "text": t}, st.text(max_size=40) | msgpack_values),
    st.sampled_from([{"event": "text"}, {"event": "flush"}, {"event": "stop"}]),
    messages,
)
frames = st.one_of(
    st.binary(max_size=48).map(lambda b: ("bytes", b)),
    st.text(max_size=24).map(lambda t: ("text", t)),
    msgpack_values.map(lambda v: ("bytes", pack(v))),
    *[client_messages.map(lambda m: ("bytes", pack(m)))] * 3,
)
starts = st.sampled_from([
    fp.start(fp.build_request(format=fmt, sample_rate=rate, reference_id=voice))
    for fmt, rate in (("pcm", 22050), ("wav", 16000), ("opus", 48000), ("pcm", None))
    for voice in (None, "en-us")
])  # fmt: skip
VALID_SESSION = [
    fp.start(fp.build_request(format="pcm", sample_rate=22050, reference_id=None)),
    fp.text("Hi."),
    fp.stop(),
]


class Errors(logging.Handler):
    """Records at ERROR and above, and any record carrying a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


@pytest.fixture
def server_errors() -> Iterator[Errors]:
    errors = Errors()
    logging.getLogger().addHandler(errors)
    try:
        yield errors
    finally:
        logging.getLogger().removeHandler(errors)


@pytest.fixture
async def live_url() -> AsyncIterator[str]:
    """``build_app`` (real espeak-ng engine) served in this process, shared by the examples."""
    async with serving_app(build_app(ServerConfig(voice="en"))) as url:
        yield url


async def receive_until(ws: aiohttp.ClientWebSocketResponse, done: str) -> list[dict[str, Any]]:
    """Every server message up to the ``finish`` whose reason or message is ``done``
    (a clean close ends it too); each must be a well-formed server message."""
    received = []
    async for frame in ws:
        assert frame.type == aiohttp.WSMsgType.BINARY, frame
        body = ormsgpack.unpackb(frame.data)
        assert isinstance(body, dict) and body.get("event") in ("audio", "finish", "log"), body
        received.append(body)
        if body["event"] == "finish":
            assert body["reason"] in ("stop", "error"), body
            if body["reason"] == "error":
                assert isinstance(body.get("message"), str) and body["message"].strip(), body
            if done in (body["reason"], body.get("message")):
                return received
        else:
            assert body["event"] != "audio" or isinstance(body.get("audio"), bytes), body
    return received


@given(
    sent=st.tuples(st.none() | starts, st.lists(frames, min_size=1, max_size=4)).map(
        lambda t: ([("bytes", t[0])] if t[0] else []) + t[1]
    )
)
async def test_server_handler_survives_arbitrary_frames_and_still_serves(
    live_url: str, server_errors: Errors, sent: list[tuple[str, Any]]
) -> None:
    async with (
        asyncio.timeout(5),
        aiohttp.ClientSession() as http,
        http.ws_connect(live_url) as ws,
    ):
        for kind, data in sent:
            await (ws.send_bytes(data) if kind == "bytes" else ws.send_str(data))
        # Whatever state the frames left (no session, a failed one, an open one), three stops
        # end it and the third at the latest gets STOP_MARKER; a flush then gets FLUSH_MARKER.
        for frame in (fp.stop(), fp.stop(), fp.stop(), fp.flush()):
            await ws.send_bytes(frame)
        replies = await receive_until(ws, STOP_MARKER)
        replies += await receive_until(ws, FLUSH_MARKER)
        assert replies[-1].get("message") == FLUSH_MARKER, replies  # not closed on us
        errors = [r["message"] for r in replies if r.get("reason") == "error"]
        for kind, data in sent:  # each undecodable frame answered, saying what is wrong
            try:
                fp.decode(data if kind == "bytes" else data.encode())
            except TtsProtocolError as exc:
                assert str(exc) in errors, (str(exc), errors)
                errors.remove(str(exc))
        for frame in VALID_SESSION:  # the same connection still serves
            await ws.send_bytes(frame)
        session = await receive_until(ws, "stop")
    assert session[-1] == {"event": "finish", "reason": "stop"}, session[-1]
    assert sum(len(m["audio"]) for m in session if m["event"] == "audio") > 10_000
    assert not server_errors.records, [r.getMessage() for r in server_errors.records]
