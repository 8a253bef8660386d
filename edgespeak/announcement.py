"""Announce payloads → :class:`Announcement`.

A payload is UTF-8 plain text, or a JSON object ``{"text": str, "id": str?, "voice": str?}``
(``voice`` is a Fish ``reference_id``). Anything else raises :class:`PayloadError` with a
message specific enough to publish in a ``failed`` event.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from edgespeak.errors import PayloadError

MAX_PAYLOAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class Announcement:
    """One thing to say.

    ``received_at`` is ``time.monotonic()`` seconds at MQTT receipt: TTFA is measured from it.
    """

    text: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    voice: str | None = None
    received_at: float = 0.0
    topic: str = ""


def parse_payload(payload: bytes, *, received_at: float = 0.0, topic: str = "") -> Announcement:
    """Parse one announce payload.

    Raises PayloadError for: a payload over 64 KiB, invalid UTF-8, JSON that is not an object
    or is malformed (when it starts with ``{``), a missing/non-string/empty ``text``, a
    non-string ``id`` or ``voice``. The error's ``announcement_id`` names the payload's id when
    one could be read, so the ``failed`` event can carry it.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}")
    try:
        body = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"payload is not valid UTF-8 (byte {exc.start})") from None
    stripped = body.strip()
    if stripped.startswith("["):  # a JSON array is an error; "[Kitchen] oven hot" is text
        try:
            json.loads(stripped)
        except json.JSONDecodeError:
            return _make(stripped, None, None, received_at, topic)
        raise PayloadError("JSON payload must be an object, not an array")
    if not stripped.startswith("{"):
        return _make(stripped, None, None, received_at, topic)
    try:
        obj = json.loads(stripped)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise PayloadError(f"malformed JSON ({exc.msg}; {where})") from None
    if not isinstance(obj, dict):
        raise PayloadError("JSON payload must be an object")
    ann_id = obj.get("id")
    if ann_id is not None and not isinstance(ann_id, str):
        raise PayloadError("field 'id' must be a string")
    text = obj.get("text")
    if text is None:
        raise _with_id(PayloadError("field 'text' is missing"), ann_id)
    if not isinstance(text, str):
        raise _with_id(PayloadError("field 'text' must be a string"), ann_id)
    voice = obj.get("voice")
    if voice is not None and not isinstance(voice, str):
        raise _with_id(PayloadError("field 'voice' must be a string"), ann_id)
    try:
        return _make(text.strip(), ann_id, voice or None, received_at, topic)
    except PayloadError as exc:
        raise _with_id(exc, ann_id) from None


def _make(
    text: str, ann_id: str | None, voice: str | None, received_at: float, topic: str
) -> Announcement:
    if not text:
        raise PayloadError("text is empty")
    if ann_id:
        return Announcement(text=text, id=ann_id, voice=voice, received_at=received_at, topic=topic)
    return Announcement(text=text, voice=voice, received_at=received_at, topic=topic)


def _with_id(exc: PayloadError, ann_id: str | None) -> PayloadError:
    return PayloadError(str(exc), ann_id)
