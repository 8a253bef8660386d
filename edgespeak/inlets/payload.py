"""Announce payloads → :class:`Announcement`.

A payload is UTF-8 plain text, or a JSON object with ``text`` and optional fields:
``id`` (str), ``voice`` (str: a Fish ``reference_id``), ``priority`` (``low``, ``normal``,
``high``, ``critical``), ``ttl_s`` (seconds, > 0), ``volume`` (0.0 to 1.0, on top of the device
volume), ``chime`` (a sound name), ``lead_in_ms`` (0 to 5000), and for the provider: ``speed``
(0.5 to 2.0, Fish prosody speed), ``volume_db`` (-20 to 20 dB, Fish prosody volume: changes
the synthesised audio, unlike ``volume``), ``latency`` (``low``, ``normal``, ``balanced``);
``sync`` (bool: false plays an ``all`` or group announcement on each node on its own, as
before group playback).
``null`` means "not given".
Unknown fields are ignored (logged at DEBUG). Anything else raises :class:`PayloadError` with
a message naming the field, specific enough to publish in a ``failed`` event.

Control characters in the text (NUL, ESC, BEL, DEL, C1) are removed and line breaks and tabs
become spaces, so nothing reaches the TTS provider, the logs or a terminal that is not speech;
the limits on payload bytes and text characters are ``[limits]`` settings.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgespeak.base.announcement import Announcement, Latency, Priority
from edgespeak.base.errors import PayloadError

log = logging.getLogger(__name__)
MAX_PAYLOAD_BYTES = 16 * 1024  # [limits] max_payload_bytes default
MAX_TEXT_CHARS = 1000  # [limits] max_text_chars default
MAX_ID_CHARS = 128  # an id or voice longer than this is not a name
# Control characters (Unicode Cc) out, whitespace ones (and the line/paragraph separators)
# to a space.
_SPACES = "\t\n\v\f\r\x1c\x1d\x1e\x1f\x85\u2028\u2029"
_CONTROLS = [c for c in range(0xA0) if c < 0x20 or c >= 0x7F]
_CLEAN = {c: (" " if chr(c) in _SPACES else None) for c in _CONTROLS} | {
    0x2028: " ",
    0x2029: " ",
}


class _Options(BaseModel):
    """The optional JSON fields, strictly typed (``true`` is not a number, ``"1"`` neither)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    priority: Priority = "normal"
    ttl_s: float | None = Field(None, gt=0, le=7 * 86400)
    volume: float | None = Field(None, ge=0.0, le=1.0)
    chime: str | None = Field(None, min_length=1, max_length=100)
    lead_in_ms: int | None = Field(None, ge=0, le=5000)
    speed: float | None = Field(None, ge=0.5, le=2.0)
    volume_db: float | None = Field(None, ge=-20.0, le=20.0)
    latency: Latency | None = None
    sync: bool | None = None


_KNOWN = {"text", "id", "voice", *_Options.model_fields}


def decode_payload(payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> str:
    """``payload`` as text. Raises PayloadError when it is over ``max_bytes`` bytes or not
    valid UTF-8."""
    if len(payload) > max_bytes:
        raise PayloadError(
            f"payload is {len(payload)} bytes; the limit is {max_bytes} "
            "([limits] max_payload_bytes)"
        )
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"payload is not valid UTF-8 (byte {exc.start})") from None


def load_json(text: str) -> Any:
    """``text`` decoded as JSON.

    Raises json.JSONDecodeError when it is malformed (the caller words that), and PayloadError
    when the decoder itself gives up on it: nesting deeper than the interpreter's recursion
    limit ("JSON is nested too deeply to decode"; RecursionError, about 1000 levels), or a
    number of more digits than ``sys.get_int_max_str_digits()`` (4300; ValueError).
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise PayloadError("JSON is nested too deeply to decode") from None
    except ValueError as exc:  # "Exceeds the limit (4300 digits) for integer string conversion…"
        reason = str(exc).split(";")[0]  # not the advice to call sys.set_int_max_str_digits()
        raise PayloadError(f"JSON cannot be decoded: {reason}") from None


def check_unicode(what: str, value: str) -> None:
    """Raise PayloadError ("<what> is not valid Unicode: …") when ``value`` holds a lone
    surrogate (JSON lets ``"\\ud800"`` through): it cannot be encoded as UTF-8, so the TTS
    request, the cache key or a Hermes reply built from it would fail later as an internal
    error."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        where = f"{ascii(value[exc.start])[1:-1]} at character {exc.start + 1}"
        raise PayloadError(f"{what} is not valid Unicode: a lone surrogate ({where})") from None


def clean_text(text: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    """``text`` without control characters (line breaks and tabs become spaces), stripped.

    Raises PayloadError when it holds a lone surrogate (see :func:`check_unicode`), when
    nothing is left ("text is empty") or more than ``max_chars`` characters are.
    """
    check_unicode("text", text)
    cleaned = text.translate(_CLEAN).strip()
    if not cleaned:
        only = " after removing control characters" if text.strip() else ""
        raise PayloadError(f"text is empty{only}")
    if len(cleaned) > max_chars:
        raise PayloadError(
            f"text is {len(cleaned)} characters; the limit is {max_chars} ([limits] max_text_chars)"
        )
    return cleaned


def parse_payload(
    payload: bytes,
    *,
    received_at: float = 0.0,
    topic: str = "",
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_chars: int = MAX_TEXT_CHARS,
) -> Announcement:
    """Parse one announce payload.

    Raises PayloadError for: a payload over ``max_bytes``, invalid UTF-8, JSON that is not an
    object or is malformed (when it starts with ``{``) or that the decoder cannot take (see
    :func:`load_json`; also when it starts with ``[``), a missing/non-string/empty ``text``,
    text over ``max_chars`` characters (see :func:`clean_text`), a non-string ``id`` or
    ``voice``, or one over 128 characters or with control characters, a lone surrogate in
    ``text``, ``id`` or ``voice`` (see :func:`check_unicode`). The error's
    ``announcement_id`` names the payload's id when one could be read, so the ``failed`` event
    can carry it.
    """
    stripped = decode_payload(payload, max_bytes).strip()
    if stripped.startswith("["):  # a JSON array is an error; "[Kitchen] oven hot" is text
        try:
            load_json(stripped)
        except json.JSONDecodeError:
            return _make(clean_text(stripped, max_chars), None, None, received_at, topic)
        raise PayloadError("JSON payload must be an object, not an array")
    if not stripped.startswith("{"):
        return _make(clean_text(stripped, max_chars), None, None, received_at, topic)
    try:
        obj = load_json(stripped)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise PayloadError(f"malformed JSON ({exc.msg}; {where})") from None
    if not isinstance(obj, dict):
        raise PayloadError("JSON payload must be an object")
    ann_id = obj.get("id")
    if ann_id is not None:
        _check_name("id", ann_id)
    text = obj.get("text")
    if text is None:
        raise _with_id(PayloadError("field 'text' is missing"), ann_id)
    if not isinstance(text, str):
        raise _with_id(PayloadError("field 'text' must be a string"), ann_id)
    voice = obj.get("voice")
    try:
        if voice is not None:
            _check_name("voice", voice)
        ann = _make(clean_text(text, max_chars), ann_id, voice or None, received_at, topic)
        options = _options(obj)
    except PayloadError as exc:
        raise _with_id(exc, ann_id) from None
    return dataclasses.replace(ann, **options) if options else ann


def unreadable(exc: Exception) -> str:
    """The ``failed`` event's error for a payload whose parser raised ``exc``, which is not a
    PayloadError (a bug, not a refusal): its type and the first 200 characters of its message."""
    return f"internal error reading the payload: {type(exc).__name__}: {str(exc)[:200]}"


def _options(obj: dict[str, Any]) -> dict[str, Any]:
    """The optional fields given (not null), validated; none given: ``{}`` without calling
    pydantic (most payloads: text and id only; the Announcement's defaults are the same)."""
    unknown = sorted(set(obj) - _KNOWN)
    if unknown:
        log.debug("ignoring unknown payload fields: %s", ", ".join(unknown))
    given = {k: v for k, v in obj.items() if k in _Options.model_fields and v is not None}
    if not given:
        return {}
    try:
        return _Options(**given).model_dump(include=set(given))
    except ValidationError as exc:
        err = exc.errors()[0]
        name = err["loc"][0] if err["loc"] else "?"
        if err["type"] == "literal_error":
            problem = f"must be one of {err['ctx']['expected']}"
        elif err["type"].endswith("_type"):
            kinds = {"chime": "a string", "lead_in_ms": "an integer", "sync": "true or false"}
            kind = kinds.get(str(name), "a number")
            problem = f"must be {kind}"
        else:
            problem = err["msg"].replace("Input should be", "must be")
        raise PayloadError(f"field {name!r} {problem} (got {err['input']!r})") from None


def _check_name(field_name: str, value: object) -> None:
    if not isinstance(value, str):
        raise PayloadError(f"field {field_name!r} must be a string")
    if len(value) > MAX_ID_CHARS:
        raise PayloadError(f"field {field_name!r} is over {MAX_ID_CHARS} characters")
    if value.translate(_CLEAN) != value:
        raise PayloadError(f"field {field_name!r} contains control characters")
    check_unicode(f"field {field_name!r}", value)


def _make(
    text: str, ann_id: str | None, voice: str | None, received_at: float, topic: str
) -> Announcement:
    if ann_id:
        return Announcement(
            text=text, id=ann_id, voice=voice, received_at=received_at, topic=topic, id_given=True
        )
    return Announcement(text=text, voice=voice, received_at=received_at, topic=topic)


def _with_id(exc: PayloadError, ann_id: str | None) -> PayloadError:
    return PayloadError(str(exc), ann_id)
