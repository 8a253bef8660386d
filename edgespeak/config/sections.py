"""The smaller sections: ``[audio]``, ``[sounds]``, ``[cache]``, ``[fallback]``, ``[server]``,
``[daemon]``, ``[limits]``, ``[homeassistant]``, ``[hermes]``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
)

from edgespeak.config.common import Section
from edgespeak.config.rates import parse_rates


class AudioConfig(Section):
    """The ALSA output: device, period and buffer (ms), lead-in, fades, keep-open, volume."""

    device: str = "default"
    period_ms: int = Field(20, ge=5, le=200)
    buffer_ms: int = Field(80, ge=10, le=2000)
    queue_chunks: int = Field(64, ge=2, le=4096)
    lead_in_ms: int = Field(0, ge=0, le=5000)
    fade_ms: float = Field(8.0, ge=0, le=20)
    keep_open_s: float = Field(3.0, ge=0, le=3600)
    volume: float = Field(1.0, ge=0.0, le=1.0)
    mixer: str | None = None


class SoundsConfig(Section):
    """Chimes: WAV files in ``dir`` named by their stem (``doorbell.wav`` → ``"doorbell"``),
    next to the built-in ones; a file in ``dir`` overrides a built-in of the same name."""

    dir: Path | None = None
    default_chime: str = "doorbell"


class Phrase(Section):
    """A phrase to keep synthesised and pinned; ``voice`` None = ``[tts] reference_id``."""

    text: str = Field(min_length=1)
    voice: str | None = None

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class CacheConfig(Section):
    """The phrase cache: complete provider streams stored as WAV, with an sqlite index.

    ``max_mb``: bound in MiB (least recently used unpinned entries are evicted past it).
    ``phrases``: texts (or ``{text, voice}`` tables) synthesised at startup and pinned.
    """

    enabled: bool = True
    dir: Path = Path("/var/cache/edgespeak")
    max_mb: float = Field(100.0, gt=0)
    phrases: tuple[Phrase, ...] = ()

    @field_validator("phrases", mode="before")
    @classmethod
    def _plain_strings(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple({"text": v} if isinstance(v, str) else v for v in value)
        return value

    @property
    def max_bytes(self) -> int:
        """``max_mb`` in bytes."""
        return int(self.max_mb * 1024 * 1024)


class FallbackConfig(Section):
    """The offline fallback, used when the provider cannot speak: ``voice`` is an espeak-ng
    voice or a Piper voice id (then Piper runs in a worker process beside the daemon; live
    fallback uses it only when its measured real-time factor is at most ``live_max_rtf``, else
    espeak-ng in the Piper voice's language; pinned phrases the provider cannot render are
    rendered with it in the background)."""

    enabled: bool = True
    voice: str = "en"
    live_max_rtf: float = Field(0.5, ge=0.0)


SessionFault = Literal["none", "error_before_audio", "error_after_audio", "close_after_audio"]


class ServerConfig(Section):
    """``edgespeak serve``: the local server, Fish live protocol and Cartesia's WebSocket.

    ``test_*`` keys are test switches, off by default, so clients can meet real refusals end
    to end: ``test_refuse_status`` answers every handshake (both protocols), ``POST /v1/tts``
    and ``GET /model`` with that HTTP status; ``test_session_fault`` makes every session end
    with ``finish`` reason ``error`` before or after its first audio, or close the socket after
    its first audio.
    ``cartesia_idle_close_s``: a Cartesia socket without a context under way this many
    seconds is closed, as Cartesia's cloud does after 5 minutes.
    ``voice``: the default voice (espeak-ng or Piper id); ``piper_voices_dir``: a directory
    of Piper voices, used beside the installed voice packages (also by the daemon's fallback).
    """

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    token: SecretStr | None = None
    voice: str | None = None  # None: the best installed Piper voice, else espeak-ng "en"
    piper_voices_dir: Path | None = None  # more Piper voices (X.onnx + X.onnx.json)
    close_after_finish: bool = False
    max_text_chars: int = Field(5000, ge=1)
    max_connections: int = Field(32, ge=1, le=10000)
    max_sessions: int = Field(8, ge=1, le=1000)
    test_refuse_status: int | None = Field(None, ge=400, le=599)
    test_session_fault: SessionFault = "none"
    cartesia_idle_close_s: float = Field(300.0, gt=0)


class DaemonConfig(Section):
    """Announcement handling in ``edgespeak run``. ``state_dir`` keeps what must survive a
    restart (the volume set over MQTT)."""

    queue_max: int = Field(20, ge=1, le=1000)
    ttl_s: float = Field(60.0, gt=0)
    dedup_window_s: float = Field(60.0, ge=0)
    state_dir: Path = Path("/var/lib/edgespeak")
    ready_wait_s: float = Field(20.0, ge=0, le=600)


class LimitsConfig(Section):
    """What one MQTT input may carry, and how often: ``max_payload_bytes`` (bytes of one
    announce or Hermes say payload), ``max_text_chars`` (characters of its text, after control
    characters are removed), ``rate`` (announcements per topic: ``"20/minute"``,
    ``"5/second;60/hour"``; :mod:`edgespeak.config.rates`)."""

    max_payload_bytes: int = Field(16384, ge=256, le=1024 * 1024)
    max_text_chars: int = Field(1000, ge=1, le=100_000)
    rate: str = "20/minute"

    @field_validator("rate")
    @classmethod
    def _rate_parses(cls, value: str) -> str:
        try:
            parse_rates(value)
        except ValueError:
            raise ValueError(
                f'{value!r} is not a rate; write e.g. "20/minute" or "5/second;60/hour"'
            ) from None
        return value


class HomeAssistantConfig(Section):
    """MQTT discovery for Home Assistant (docs/protocols.md §10)."""

    enabled: bool = True
    discovery_prefix: str = "homeassistant"
    status_topic: str = "homeassistant/status"


class HermesConfig(Section):
    """Rhasspy Hermes compatibility (docs/protocols.md §9): ``hermes/tts/say`` and
    ``hermes/audioServer/<site_id>/playBytes/#`` for this ``site_id``."""

    enabled: bool = False
    site_id: str = "default"
