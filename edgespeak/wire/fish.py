"""Fish Audio live TTS protocol messages (``/v1/tts/live``), shared by client and server.

Source: docs/protocols.md §1 and §2 (official fishaudio SDK 1.3.0 and the raw WebSocket docs).
Every message, both ways, is one MessagePack map in a binary WebSocket frame.
Client → server: ``start`` {request}, ``text`` {text}, ``flush``, ``stop``.
Server → client: ``audio`` {audio: bin}, ``finish`` {reason: "stop"|"error"}, ``log``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import ormsgpack

from edgespeak.base.errors import TtsProtocolError

LIVE_PATH = "/v1/tts/live"

# TTSRequest defaults as the official SDK sends them (docs/protocols.md §2).
REQUEST_DEFAULTS: dict[str, Any] = {
    "text": "",
    "chunk_length": 200,
    "format": "mp3",
    "sample_rate": None,
    "mp3_bitrate": 128,
    "opus_bitrate": -1000,
    "references": [],
    "reference_id": None,
    "normalize": True,
    "latency": "balanced",
    "prosody": None,
    "top_p": 0.7,
    "temperature": 0.7,
    "max_new_tokens": 1024,
    "repetition_penalty": 1.2,
    "min_chunk_length": 50,
    "condition_on_previous_chunks": True,
    "early_stop_threshold": 1.0,
}


def build_request(
    *, format: str, sample_rate: int | None, reference_id: str | None
) -> dict[str, Any]:
    """A full TTSRequest map as the official SDK would send it, with our choices applied."""
    request = dict(REQUEST_DEFAULTS)
    request.update(format=format, sample_rate=sample_rate, reference_id=reference_id)
    return request


def opus_bitrate_bps(value: object) -> int | None:
    """Fish ``opus_bitrate`` in either convention → bits/s, or None for auto (-1000).

    The SDK sends kbps (24, 32, 48, 64), the docs bps (24000…64000); both are accepted
    (docs/protocols.md §2). Raises ValueError for anything else.
    """
    if value is None or value == -1000:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        bps = value * 1000 if value <= 512 else value
        if 6000 <= bps <= 510000:
            return bps
    raise ValueError(f"opus_bitrate {value!r} is not -1000, kbps or bps")


def start(request: dict[str, Any]) -> bytes:
    """Encode ``{"event": "start", "request": request}``."""
    return ormsgpack.packb({"event": "start", "request": request})


def text(chunk: str) -> bytes:
    """Encode ``{"event": "text", "text": chunk}``; texts concatenate verbatim on the server."""
    return ormsgpack.packb({"event": "text", "text": chunk})


def flush() -> bytes:
    """Encode ``{"event": "flush"}``: synthesise what is buffered now."""
    return ormsgpack.packb({"event": "flush"})


def stop() -> bytes:
    """Encode ``{"event": "stop"}``: synthesise the rest, then ``finish``."""
    return ormsgpack.packb({"event": "stop"})


def audio(chunk: bytes) -> bytes:
    """Encode ``{"event": "audio", "audio": <bin>}``."""
    return ormsgpack.packb({"event": "audio", "audio": chunk})


def finish(reason: str, **extra: Any) -> bytes:
    """Encode ``{"event": "finish", "reason": reason, **extra}`` (reason "stop" or "error")."""
    return ormsgpack.packb({"event": "finish", "reason": reason, **extra})


@dataclass(frozen=True)
class Message:
    """A decoded message: ``event`` name and the whole map."""

    event: str
    body: dict[str, Any]


def decode(frame: bytes) -> Message:
    """Decode one binary frame. Raises TtsProtocolError if it is not a msgpack map with event."""
    try:
        body = ormsgpack.unpackb(frame)
    except (ormsgpack.MsgpackDecodeError, ValueError, TypeError) as exc:
        raise TtsProtocolError(f"frame is not valid MessagePack: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("event"), str):
        raise TtsProtocolError("frame is not a MessagePack map with a string 'event'")
    return Message(body["event"], body)


_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


def split_first_sentence(text: str) -> tuple[str, str]:
    """Split ``text`` after its first sentence: ``(first, rest)``, spaces kept for concatenation.

    The client sends ``first`` then ``flush`` so audio starts early, then ``rest``.
    ``first + rest == text`` always holds.
    """
    match = _SENTENCE_END.search(text)
    if match is None or match.end() >= len(text):
        return text, ""
    return text[: match.end()], text[match.end() :]
