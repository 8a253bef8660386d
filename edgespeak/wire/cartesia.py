"""Cartesia TTS WebSocket messages (``/tts/websocket``), shared by client and server.

Source: docs/protocols.md §6, checked against the official ``cartesia`` SDK 4.x
(``cartesia/lib/_tts.py``, ``cartesia/types/websocket_response.py``,
``cartesia/types/generation_request.py``). Every message, both ways, is one JSON object in a
text frame; audio travels base64-encoded inside it.

Client → server: a generation request ``{context_id, model_id, transcript, voice: {mode: "id",
id}, output_format: {container: "raw", encoding, sample_rate}, language?, continue, flush?,
max_buffer_delay_ms?, …}`` (every input of one context repeats the same fields; only
``transcript``, ``continue`` and ``flush`` change), or ``{context_id, cancel: true}``.
Server → client, by ``type``: ``chunk`` {data: base64, done: false, step_time ms, flush_id?},
``flush_done``, ``timestamps``, ``done``, ``error`` {title/message or error, status_code,
context_id possibly absent}.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgespeak.base.errors import TtsProtocolError

WEBSOCKET_PATH = "/tts/websocket"
API_VERSION = "2025-04-16"  # a Cartesia-Version the API accepts (docs/protocols.md §6)
DEFAULT_MODEL = "sonic-3"
SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)  # Hz
ENCODINGS = ("pcm_f32le", "pcm_s16le", "pcm_mulaw", "pcm_alaw")
MAX_BUFFER_DELAY_MS = 5000  # the API accepts 0…5000 ms (SDK generation_request.py)
# Fields that may differ between the inputs of one context; every other must stay identical.
PER_INPUT_FIELDS = frozenset({"context_id", "transcript", "continue", "flush"})
# Close codes after which reconnecting is worth it (docs/protocols.md §6, RFC 6455 §7.4.1; the SDK's
# websocket_reconnection.py), plus 1000: the server's normal close of an idle socket.
RECONNECT_CLOSE_CODES = frozenset({1000, 1001, 1005, 1006, 1011, 1012, 1013, 1015})


def generation_request(
    *,
    context_id: str,
    model_id: str,
    voice_id: str,
    transcript: str,
    sample_rate: int,
    continue_: bool,
    language: str | None = None,
    max_buffer_delay_ms: int | None = None,
    encoding: str = "pcm_s16le",
) -> dict[str, Any]:
    """One input of context ``context_id``: raw ``encoding`` PCM at ``sample_rate`` Hz.

    ``continue_`` True while more input follows; a context ends with an empty ``transcript``
    and ``continue_`` False. ``language`` and ``max_buffer_delay_ms`` (ms) are left out when
    None (the API's defaults; newer API versions buffer 3000 ms by default).
    """
    request: dict[str, Any] = {
        "context_id": context_id,
        "model_id": model_id,
        "transcript": transcript,
        "voice": {"mode": "id", "id": voice_id},
        "output_format": {"container": "raw", "encoding": encoding, "sample_rate": sample_rate},
        "continue": continue_,
    }
    if language is not None:
        request["language"] = language
    if max_buffer_delay_ms is not None:
        request["max_buffer_delay_ms"] = max_buffer_delay_ms
    return request


def cancel(context_id: str) -> dict[str, Any]:
    """``{context_id, cancel: true}``: stop what has not started generating in that context."""
    return {"context_id": context_id, "cancel": True}


def chunk(
    context_id: str, audio: bytes, *, step_time_ms: float, flush_id: int | None = None
) -> dict[str, Any]:
    """A ``chunk`` response carrying ``audio`` (raw PCM bytes) base64-encoded in ``data``."""
    message: dict[str, Any] = {
        "type": "chunk",
        "context_id": context_id,
        "data": base64.b64encode(audio).decode("ascii"),
        "done": False,
        "status_code": 206,
        "step_time": round(step_time_ms, 3),
    }
    if flush_id is not None:
        message["flush_id"] = flush_id
    return message


def flush_done(context_id: str, flush_id: int) -> dict[str, Any]:
    """A ``flush_done`` response: everything sent before flush number ``flush_id`` (from 1)
    has been generated."""
    return {
        "type": "flush_done",
        "context_id": context_id,
        "done": False,
        "flush_done": True,
        "flush_id": flush_id,
        "status_code": 206,
    }


def done(context_id: str) -> dict[str, Any]:
    """The ``done`` response ending a context."""
    return {"type": "done", "context_id": context_id, "done": True, "status_code": 200}


def error(
    message: str,
    *,
    status_code: int,
    context_id: str | None = None,
    title: str = "Invalid request",
) -> dict[str, Any]:
    """An ``error`` response (for ``context_id``, or the whole connection when None). Carries
    both shapes seen in the wild: ``title``/``message`` (SDK 4.x) and ``error`` (older)."""
    body: dict[str, Any] = {
        "type": "error",
        "done": True,
        "status_code": status_code,
        "title": title,
        "message": message,
        "error": f"{title}: {message}",
    }
    if context_id is not None:
        body["context_id"] = context_id
    return body


def encode(message: Mapping[str, Any]) -> str:
    """One message as the text of a WebSocket frame (compact JSON)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Response:
    """A decoded server message: its ``type``, ``context_id`` (None when absent) and body."""

    type: str
    context_id: str | None
    body: dict[str, Any]


def decode(frame: str | bytes) -> Response:
    """Decode one frame's text. Raises TtsProtocolError unless it is a JSON object with a
    string ``type``."""
    try:
        body = json.loads(frame)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TtsProtocolError(f"frame is not valid JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        raise TtsProtocolError("frame is not a JSON object with a string 'type'")
    context_id = body.get("context_id")
    return Response(body["type"], context_id if isinstance(context_id, str) else None, body)


def chunk_audio(response: Response) -> bytes:
    """The raw audio bytes of a ``chunk`` (b"" when ``data`` is empty or null). Raises
    TtsProtocolError when ``data`` is not base64 text."""
    data = response.body.get("data")
    if data is None:
        return b""
    if not isinstance(data, str):
        raise TtsProtocolError("'chunk' whose 'data' is not a base64 string")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TtsProtocolError(f"'chunk' whose 'data' is not valid base64: {exc}") from None


def error_detail(body: Mapping[str, Any]) -> str:
    """A one-line description of an ``error`` response: status, title and message (or the
    older ``error`` string), whatever of them is present."""
    status = body.get("status_code")
    title, message, older = body.get("title"), body.get("message"), body.get("error")
    text = ": ".join(str(p) for p in (title, message) if p) or (str(older) if older else "")
    text = text or "no detail given"
    return f"{status} {text}" if status is not None else text
