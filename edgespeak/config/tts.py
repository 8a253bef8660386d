"""``[tts]``: the TTS provider, its voice and every request field that shapes the audio."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from edgespeak.base.errors import ConfigError
from edgespeak.base.pcm import PLAYABLE_FORMATS
from edgespeak.config.common import AudioFormat, Latency, Section
from edgespeak.config.secrets import credential, read_secret
from edgespeak.wire import cartesia as cartesia_protocol

OPUS_KBPS = (24, 32, 48, 64)  # the SDK's opus_bitrate values (docs/protocols.md §2)
MAX_REFERENCES_BYTES = 10 * 1024 * 1024  # every session's start frame carries them


class Prosody(Section):
    """Fish ``prosody``: ``speed`` multiplier 0.5-2.0, ``volume`` in dB -20..20
    (docs/protocols.md §2)."""

    speed: float = Field(1.0, ge=0.5, le=2.0)
    volume: float = Field(0.0, ge=-20.0, le=20.0)


class Reference(Section):
    """One instant-voice-cloning sample: the audio file at ``audio`` and its transcript
    ``text``. The file is read when the configuration loads (:attr:`data`); a missing,
    unreadable or empty file is a configuration error naming it."""

    audio: Path
    text: str = Field(min_length=1)
    _data: bytes = PrivateAttr(b"")

    @model_validator(mode="after")
    def _read(self) -> Reference:
        try:
            data = self.audio.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read reference audio {self.audio}: {exc.strerror}") from None
        if not data:
            raise ValueError(f"reference audio {self.audio} is empty")
        self._data = data
        return self

    @property
    def data(self) -> bytes:
        """The audio file's bytes as read at load (sent as-is: Fish takes wav, mp3, ...)."""
        return self._data


class TtsConfig(Section):
    """The TTS provider: a Fish-live-protocol or Cartesia WebSocket endpoint (``provider``).

    ``url`` None means the embedded default: edgespeak's own local server at ``[server]``.
    The TTSRequest keys (``format`` … ``top_p``) are sent in every session's ``start``, with
    the ranges of docs/protocols.md §2; ``mp3`` is refused because the daemon cannot play it.
    Cartesia (docs/protocols.md §6): ``model`` is the ``model_id`` (default
    ``cartesia_protocol.DEFAULT_MODEL`` when unset), ``reference_id`` the voice id, the audio
    raw ``pcm_s16le`` (``format`` must be ``pcm``, ``sample_rate`` one Cartesia offers);
    ``max_buffer_delay_ms`` (ms) and ``language`` go into every request.
    ``reconnect_max_s``: the longest wait between connection attempts to the provider, seconds
    (the broker's is ``[mqtt] reconnect_max_s``).
    """

    provider: Literal["fish", "cartesia"] = "fish"
    url: str | None = None
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    model: str = "s1"
    format: AudioFormat = "pcm"
    sample_rate: int | None = Field(22050, ge=8000, le=48000)
    reference_id: str | None = None
    references: tuple[Reference, ...] = ()
    mp3_bitrate: Literal[64, 128, 192] = 128
    opus_bitrate: int = -1000
    latency: Latency = "balanced"
    prosody: Prosody | None = None
    chunk_length: int = Field(200, ge=100, le=300)
    normalize: bool = True
    temperature: float = Field(0.7, ge=0.0, le=1.0)
    top_p: float = Field(0.7, ge=0.0, le=1.0)
    connect_timeout_s: float = Field(5.0, gt=0)
    first_audio_timeout_ms: int = Field(3000, ge=100, le=60000)
    heartbeat_s: float = Field(20.0, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    cartesia_version: str = cartesia_protocol.API_VERSION
    max_buffer_delay_ms: int = Field(0, ge=0, le=cartesia_protocol.MAX_BUFFER_DELAY_MS)
    language: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _provider_model(cls, data: object) -> object:
        """``model`` unset with provider cartesia: Cartesia's default model, not Fish's."""
        if isinstance(data, dict) and data.get("provider") == "cartesia" and "model" not in data:
            return data | {"model": cartesia_protocol.DEFAULT_MODEL}
        return data

    @model_validator(mode="after")
    def _cartesia_audio(self) -> TtsConfig:
        if self.provider == "cartesia":
            if self.format != "pcm":
                raise ValueError('provider "cartesia" streams raw pcm_s16le: set format = "pcm"')
            if self.sample_rate not in cartesia_protocol.SAMPLE_RATES:
                rates = ", ".join(map(str, cartesia_protocol.SAMPLE_RATES))
                raise ValueError(f'provider "cartesia" needs sample_rate one of {rates}')
            if self.url is not None and not self.reference_id:
                raise ValueError(
                    'provider "cartesia" needs reference_id: a default voice (Cartesia voice id)'
                )
        return self

    @field_validator("format", mode="before")
    @classmethod
    def _playable(cls, value: object) -> object:
        if value == "mp3":
            raise ValueError(
                "mp3 cannot be played: the daemon has no mp3 decoder; use one of "
                + ", ".join(PLAYABLE_FORMATS)
            )
        return value

    @field_validator("opus_bitrate")
    @classmethod
    def _opus_bitrate(cls, value: int) -> int:
        if value == -1000 or value in OPUS_KBPS or 24000 <= value <= 64000:
            return value
        raise ValueError("must be -1000 (auto), kbps 24, 32, 48 or 64, or bits/s 24000 to 64000")

    @model_validator(mode="after")
    def _small_references(self) -> TtsConfig:
        total = sum(len(ref.data) for ref in self.references)
        if total > MAX_REFERENCES_BYTES:
            raise ValueError(
                f"references hold {total} bytes of audio; at most {MAX_REFERENCES_BYTES} "
                "(they travel in every session's start message)"
            )
        return self

    @model_validator(mode="after")
    def _one_key(self) -> TtsConfig:
        if self.api_key is not None and self.api_key_file is not None:
            raise ValueError("set api_key or api_key_file, not both")
        if self.api_key_file is not None:
            try:  # unreadable: say so at load, not at the first connection
                read_secret(self.api_key_file)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return self

    def resolved_api_key(self) -> SecretStr | None:
        """The provider's API key, first found of: ``api_key`` (TOML or
        ``EDGESPEAK_TTS__API_KEY``); the content of ``api_key_file``; the systemd credential
        ``tts_api_key``. None: no key. Raises ConfigError naming an unreadable file."""
        if self.api_key is not None:
            return self.api_key
        if self.api_key_file is not None:
            return read_secret(self.api_key_file)
        return credential("tts_api_key")

    @field_validator("url")
    @classmethod
    def _ws_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value

    @property
    def rate_hz(self) -> int:
        """Sample rate of the audio that comes back, Hz (opus is always 48000; None → 44100)."""
        if self.format == "opus":
            return 48000
        return self.sample_rate or 44100
