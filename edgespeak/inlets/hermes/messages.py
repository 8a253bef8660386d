"""Rhasspy Hermes message shapes (docs/protocols.md §9) as pure functions: no MQTT, no I/O.

Two requests are understood, both only for the configured ``site_id``:

``hermes/tts/say`` (JSON) → an :class:`Announcement`; when it has been spoken the daemon publishes
``hermes/tts/sayFinished``::

    say:          {"text": str, "siteId": str = "default", "lang": str?, "id": str?,
                   "sessionId": str?, "volume": float? (0..1)}
    sayFinished:  {"siteId": str, "id": str?, "sessionId": str?}   (absent → null)

``hermes/audioServer/<siteId>/playBytes/<requestId>`` (payload: a whole WAV file) → s16le mono
PCM; when it has been played the daemon publishes ``hermes/audioServer/<siteId>/playFinished``::

    playFinished: {"id": <requestId>, "siteId": <siteId>, "sessionId": <requestId>}

Sources, checked against the real code and docs:

- ``rhasspyhermes/tts.py`` (rhasspy-hermes 0.6.2, the library Rhasspy 2.5's services use):
  ``TtsSay(text, site_id="default", lang=None, id=None, session_id=None, volume=None)`` and
  ``TtsSayFinished(site_id="default", id=None, session_id=None)``, serialised camelCase with
  ``null`` for None: ``TtsSayFinished(id="a").payload()`` is
  ``{"siteId": "default", "id": "a", "sessionId": null}``.
- ``rhasspy/rhasspy`` ``docs/reference.md`` (2.5): ``say.volume`` "volume level to speak with
  (0 = off, 1 = full volume)"; ``sayFinished`` "indicates that the text to speech system has
  finished speaking"; ``playFinished`` carries ``id`` = the ``requestId`` of the playBytes topic,
  ``siteId`` being part of the topic.
- ``rhasspyspeakers_cli_hermes`` (Rhasspy's own audio output) answers playBytes with
  ``AudioPlayFinished(id=request_id, session_id=...)`` where the rhasspy-hermes client fills
  ``session_id`` from the topic, i.e. with the request id; ``rhasspytts_cli_hermes`` echoes
  ``say.id``/``say.session_id`` as received (None → null) in sayFinished, and matches
  playFinished to its request by ``id`` only.
- ``AudioPlayBytes.TOPIC_PATTERN`` in ``rhasspyhermes/audioserver.py``:
  ``^hermes/audioServer/([^/]+)/playBytes/([^/]+)$`` (site id, request id).

Hence our playFinished payload is a superset: Rhasspy's own ``id``/``sessionId`` plus the Snips
Hermes ``siteId``. rhasspy-hermes ignores keys it does not know when decoding.

``lang`` decision: Rhasspy's ``lang`` is a language code ("en", "it_IT") while an edgespeak
``voice`` is a provider voice id (a Fish ``reference_id``), so ``lang`` is **not** mapped to a
voice: the announcement keeps ``voice=None`` (the configured voice). ``lang`` is validated (a
string or null), kept on :attr:`Say.lang` and logged at DEBUG.
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

from edgespeak.audio.wav import read_wav
from edgespeak.base.announcement import Announcement
from edgespeak.base.errors import AudioFormatError, ConfigError, PayloadError
from edgespeak.inlets.payload import (
    MAX_PAYLOAD_BYTES,
    MAX_TEXT_CHARS,
    check_unicode,
    clean_text,
    decode_payload,
    load_json,
)

log = logging.getLogger(__name__)

DEFAULT_SITE_ID = "default"
SAY_TOPIC = "hermes/tts/say"
SAY_FINISHED_TOPIC = "hermes/tts/sayFinished"
_PLAY_BYTES_RE = re.compile(r"^hermes/audioServer/([^/]+)/playBytes/([^/]+)$")
_KNOWN_SAY_FIELDS = {"text", "siteId", "lang", "id", "sessionId", "volume"}


@dataclass(frozen=True)
class HermesTopics:
    """The Hermes topics of one site.

    Raises ConfigError when ``site_id`` is empty or holds ``/``, ``+`` or ``#`` (it is a single
    topic level).
    """

    site_id: str

    def __post_init__(self) -> None:
        if not self.site_id or any(c in self.site_id for c in "/+#\0"):
            raise ConfigError(
                f"hermes.site_id must be one non-empty MQTT topic level without '/', '+', '#' "
                f"(got {self.site_id!r})"
            )

    @property
    def say(self) -> str:
        """``hermes/tts/say``: shared by all sites, the site is in the JSON ``siteId``."""
        return SAY_TOPIC

    @property
    def say_finished(self) -> str:
        """``hermes/tts/sayFinished``: shared by all sites."""
        return SAY_FINISHED_TOPIC

    @property
    def play_bytes(self) -> str:
        """Subscription filter ``hermes/audioServer/<site>/playBytes/+``."""
        return f"hermes/audioServer/{self.site_id}/playBytes/+"

    @property
    def play_finished(self) -> str:
        """``hermes/audioServer/<site>/playFinished``."""
        return f"hermes/audioServer/{self.site_id}/playFinished"

    @property
    def subscriptions(self) -> list[str]:
        """The filters to subscribe to: ``[say, play_bytes]``."""
        return [self.say, self.play_bytes]


class SayRefused(PayloadError):
    """A ``hermes/tts/say`` for this site that cannot be spoken (its ``text``, ``volume`` or
    ``lang`` is bad) but whose ``id`` and ``sessionId`` could be read: ``reply`` is the
    sayFinished payload that answers it, so that a dialogue waiting for it goes on."""

    def __init__(self, message: str, hermes_id: str | None, reply: bytes) -> None:
        super().__init__(message, hermes_id)
        self.reply = reply


@dataclass(frozen=True)
class Say:
    """A ``hermes/tts/say`` for this site.

    ``hermes_id`` and ``session_id`` are the message's ``id``/``sessionId`` exactly as received
    (None when absent or null), to be echoed in sayFinished. ``site_id`` is the message's
    ``siteId`` (equal to ours). ``lang`` is the message's language code, informational only.
    """

    announcement: Announcement
    hermes_id: str | None
    session_id: str | None
    site_id: str
    lang: str | None = None


def parse_say(
    payload: bytes,
    *,
    site_id: str,
    received_at: float,
    topic: str,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_chars: int = MAX_TEXT_CHARS,
) -> Say | None:
    """Parse a ``hermes/tts/say`` payload for site ``site_id``.

    Returns None when the message's ``siteId`` (default ``"default"``) is another site; such a
    message is not validated further. ``received_at`` is ``time.monotonic()`` seconds at
    receipt. The announcement gets the stripped ``text``, ``volume`` (0..1, None when absent),
    ``received_at``, ``topic`` and as id the Hermes ``id`` when non-empty (``id_given=True``),
    else a generated one; ``voice`` stays None (see the module doc on ``lang``).

    Raises PayloadError naming the field for: a payload over ``max_bytes``, invalid
    UTF-8, malformed JSON, JSON the decoder cannot take (too deeply nested, a number of over
    4300 digits) or JSON that is not an object, a non-string ``siteId``/``id``/
    ``sessionId``/``lang`` or one holding a lone surrogate (``"\\ud800"``: it could not be
    echoed in sayFinished), a missing, non-string or empty ``text`` or one over ``max_chars``
    characters once control characters are removed, a ``volume`` that is not a
    number or is outside 0..1. The error's ``announcement_id`` is the Hermes ``id`` when it
    could be read. ``null`` counts as absent; unknown fields are ignored (logged at DEBUG).
    Raised as :class:`SayRefused`, with the sayFinished reply, once ``siteId``, ``id`` and
    ``sessionId`` have been read.
    """
    obj = _json_object(payload, max_bytes)
    msg_site = _opt_str(obj, "siteId", None)
    if msg_site is None:
        msg_site = DEFAULT_SITE_ID
    if msg_site != site_id:
        log.debug("ignoring hermes/tts/say for site %r (we are %r)", msg_site, site_id)
        return None
    hermes_id = _opt_str(obj, "id", None)
    session_id = _opt_str(obj, "sessionId", hermes_id)
    try:
        return _say(obj, msg_site, hermes_id, session_id, received_at, topic, max_chars)
    except PayloadError as exc:
        reply = _finished(msg_site, hermes_id, session_id)
        raise SayRefused(str(exc), hermes_id, reply) from None


def _say(
    obj: dict[str, Any],
    msg_site: str,
    hermes_id: str | None,
    session_id: str | None,
    received_at: float,
    topic: str,
    max_chars: int,
) -> Say:
    """The :class:`Say` of ``obj``, a say for this site whose ids have been read. Raises
    PayloadError for a bad ``lang``, ``text`` or ``volume``."""
    lang = _opt_str(obj, "lang", hermes_id)
    text = obj.get("text")
    if text is None:
        raise PayloadError("field 'text' is missing", hermes_id)
    if not isinstance(text, str):
        raise PayloadError(f"field 'text' must be a string (got {_kind(text)})", hermes_id)
    try:
        text = clean_text(text, max_chars)
    except PayloadError as exc:
        problem = str(exc).removeprefix("text ")
        raise PayloadError(f"field 'text' {problem}", hermes_id) from None
    volume = _volume(obj.get("volume"), hermes_id)
    unknown = sorted(set(obj) - _KNOWN_SAY_FIELDS)
    if unknown:
        log.debug("ignoring unknown hermes/tts/say fields: %s", ", ".join(unknown))
    if lang:
        log.debug("hermes/tts/say lang %r is not mapped to a voice", lang)
    if hermes_id:
        ann = Announcement(
            text=text,
            id=hermes_id,
            received_at=received_at,
            topic=topic,
            id_given=True,
            volume=volume,
        )
    else:
        ann = Announcement(
            text=text, id=uuid.uuid4().hex[:12], received_at=received_at, topic=topic, volume=volume
        )
    return Say(
        announcement=ann, hermes_id=hermes_id, session_id=session_id, site_id=msg_site, lang=lang
    )


def say_finished(say: Say) -> bytes:
    """The ``hermes/tts/sayFinished`` payload for ``say``: UTF-8 JSON
    ``{"siteId": str, "id": str | null, "sessionId": str | null}``, the same keys, order and
    nulls as rhasspy-hermes ``TtsSayFinished.payload()``."""
    return _finished(say.site_id, say.hermes_id, say.session_id)


def _finished(site_id: str, hermes_id: str | None, session_id: str | None) -> bytes:
    body = {"siteId": site_id, "id": hermes_id, "sessionId": session_id}
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class PlayBytes:
    """A ``playBytes`` request for this site, decoded.

    ``pcm``: s16le mono PCM (channels averaged) at ``rate_hz``, the WAV file's own rate; the
    player resamples to the device rate.
    """

    request_id: str
    site_id: str
    pcm: bytes
    rate_hz: int


def parse_play_bytes(topic: str, payload: bytes, *, site_id: str) -> PlayBytes | None:
    """Parse a ``hermes/audioServer/<siteId>/playBytes/<requestId>`` message.

    Returns None when ``topic`` is not a playBytes topic (the rhasspy-hermes pattern
    ``^hermes/audioServer/([^/]+)/playBytes/([^/]+)$``) or names another site. ``payload`` is a
    whole PCM WAV file (8/16/24/32-bit, any channel count, at most ``MAX_WAV_BYTES``), decoded
    with :func:`edgespeak.audio.wav.read_wav` at its native rate.
    Raises PayloadError carrying the request id as ``announcement_id`` when it cannot be decoded.
    """
    match = _PLAY_BYTES_RE.match(topic)
    if match is None:
        return None
    topic_site, request_id = match.group(1), match.group(2)
    if topic_site != site_id:
        return None
    try:
        pcm, rate = read_wav(payload)
    except AudioFormatError as exc:
        raise PayloadError(
            f"playBytes {request_id}: payload ({len(payload)} bytes) is not a playable WAV: {exc}",
            request_id,
        ) from exc
    return PlayBytes(request_id=request_id, site_id=topic_site, pcm=pcm, rate_hz=rate)


def play_finished(play: PlayBytes) -> bytes:
    """The ``hermes/audioServer/<siteId>/playFinished`` payload for ``play``: UTF-8 JSON
    ``{"id": <requestId>, "siteId": <siteId>, "sessionId": <requestId>}`` (Rhasspy's audio
    output sends ``id`` and ``sessionId`` = request id; Snips Hermes adds ``siteId``)."""
    body = {"id": play.request_id, "siteId": play.site_id, "sessionId": play.request_id}
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def _json_object(payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    body = decode_payload(payload, max_bytes)
    try:
        obj = load_json(body)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise PayloadError(f"malformed JSON ({exc.msg}; {where})") from None
    if not isinstance(obj, dict):
        raise PayloadError(f"JSON payload must be an object (got {_kind(obj)})")
    return obj


def _opt_str(obj: dict[str, Any], name: str, hermes_id: str | None) -> str | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise PayloadError(f"field {name!r} must be a string (got {_kind(value)})", hermes_id)
    if value is not None:
        try:
            check_unicode(f"field {name!r}", value)
        except PayloadError as exc:
            raise PayloadError(str(exc), hermes_id) from None
    return value


def _volume(value: object, hermes_id: str | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError(f"field 'volume' must be a number (got {_kind(value)})", hermes_id)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise PayloadError(f"field 'volume' must be between 0 and 1 (got {value!r})", hermes_id)
    return float(value)


def _kind(value: object) -> str:
    """A JSON type name for error messages: 'a number', 'an array', …"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
