"""A Fish TTSRequest as the local server reads it, checked against the documented ranges.

Fields and ranges from docs/protocols.md §2 (the official SDK's TTSConfig agrees). The
local engines honour ``format``, ``sample_rate``, ``opus_bitrate``, ``reference_id`` (a Piper
or espeak-ng voice), ``prosody.speed`` (speaking rate) and ``prosody.volume`` (gain in dB); the
rest is checked and otherwise ignored (neither engine can clone a voice or sample tokens).
Unknown fields are ignored, as clients must ignore unknown events.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgespeak.server.output import UnsupportedRequest


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Prosody(_Model):
    speed: float = Field(1.0, ge=0.5, le=2.0)
    volume: float = Field(0.0, ge=-20.0, le=20.0)


class _Reference(_Model):
    audio: bytes | str
    text: str


class SpeechRequest(_Model):
    """The checked request. Defaults are the server's where the docs give them."""

    text: str = ""
    format: str = "mp3"
    sample_rate: int | None = None
    mp3_bitrate: Literal[64, 128, 192] = 128
    opus_bitrate: int = -1000
    references: list[_Reference] = []
    reference_id: str | None = None
    normalize: bool = True
    latency: Literal["low", "normal", "balanced"] = "normal"
    prosody: _Prosody | None = None
    chunk_length: int = Field(300, ge=100, le=300)
    top_p: float = Field(0.7, ge=0.0, le=1.0)
    temperature: float = Field(0.7, ge=0.0, le=1.0)

    @property
    def voice(self) -> str | None:
        """The voice asked for (``reference_id``), None = the server's default."""
        return self.reference_id or None

    @property
    def speed(self) -> float:
        """Speaking-rate multiplier (``prosody.speed``), 1.0 when absent."""
        return self.prosody.speed if self.prosody is not None else 1.0

    @property
    def volume_db(self) -> float:
        """Gain in dB (``prosody.volume``), 0 when absent."""
        return self.prosody.volume if self.prosody is not None else 0.0


def parse_request(body: Any) -> SpeechRequest:
    """Check a decoded TTSRequest map. Raises UnsupportedRequest naming the first bad field,
    e.g. ``request field 'prosody.speed': Input should be less than or equal to 2 (got 3)``."""
    if not isinstance(body, dict):
        raise UnsupportedRequest("the request must be a map of TTSRequest fields")
    try:
        return SpeechRequest.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"]) or "?"
        got = repr(err["input"])
        got = got if len(got) <= 60 else got[:59] + "…"
        raise UnsupportedRequest(f"request field {where!r}: {err['msg']} (got {got})") from None
