"""Configuration: one frozen pydantic-settings tree.

Sources, strongest first: environment ``EDGESPEAK_<SECTION>__<KEY>`` (``EDGESPEAK_NODE_ID`` for
top-level keys), then the TOML file (``--config PATH``, else ``/etc/edgespeak/config.toml`` when
it exists), then the defaults below. Every key is documented in ``config.example.toml``.
Unknown keys and bad values raise :class:`~edgespeak.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Literal

from limits import parse_many
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from edgespeak.audio.formats import PLAYABLE_FORMATS
from edgespeak.errors import ConfigError
from edgespeak.tts import cartesia_protocol

DEFAULT_CONFIG_PATH = Path("/etc/edgespeak/config.toml")
AudioFormat = Literal["pcm", "wav", "opus"]
Latency = Literal["low", "normal", "balanced"]
OPUS_KBPS = (24, 32, 48, 64)  # the SDK's opus_bitrate values (protocols.md §1)
MAX_REFERENCES_BYTES = 10 * 1024 * 1024  # every session's start frame carries them


def sanitise_node_id(name: str) -> str:
    """Turn a host name into an MQTT-topic- and Home-Assistant-safe id: ``[a-z0-9_-]+``."""
    cleaned = re.sub(r"[^a-z0-9_-]+", "_", name.strip().lower()).strip("_")
    return cleaned or "edgespeak"


def read_secret(path: Path) -> SecretStr:
    """The content of the secret file at ``path``, trailing newlines stripped.

    Raises ConfigError naming the file and the OS error (never the content).
    """
    try:
        return SecretStr(path.read_text(encoding="utf-8").rstrip("\r\n"))
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read secret file {path}: {why}") from None


CREDSTORE = Path("/etc/credstore")  # where scripts/install puts edgespeak.<name>


def credential(name: str) -> SecretStr | None:
    """The systemd credential ``name``: ``$CREDENTIALS_DIRECTORY/<name>`` in the service (from
    the unit's ``LoadCredential=``); outside it (``edgespeak doctor``, ``say``, ``cache warm``
    run by root) the same file in ``/etc/credstore/edgespeak.<name>`` when readable. None when
    there is none. Raises ConfigError when the service's credential cannot be read."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory:
        path = Path(directory) / name
        return read_secret(path) if path.is_file() else None
    stored = CREDSTORE / f"edgespeak.{name}"
    if stored.is_file() and os.access(stored, os.R_OK):
        return read_secret(stored)
    return None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttConfig(_Section):
    """The broker link.

    ``protocol``: ``"auto"`` tries MQTT 5 and falls back to 3.1.1 when the broker refuses the
    version; ``"5"`` or ``"3.1.1"`` forces one. ``session_expiry_s``: MQTT 5 Session Expiry
    Interval, seconds (the broker keeps the session and its queued QoS 1 messages that long
    after a disconnect). The password comes from ``password`` (file or env
    ``EDGESPEAK_MQTT__PASSWORD``), ``password_file``, or systemd's
    ``$CREDENTIALS_DIRECTORY/mqtt_password``: see :meth:`resolved_password`. ``tls``: TLS with
    server certificate and host name verification against ``ca_file`` (None: the system's CA
    store); ``certfile``/``keyfile``: an optional client certificate.
    """

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    prefix: str = "edgespeak"
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    session_expiry_s: int = Field(3600, ge=0, le=0xFFFFFFFF)
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    tls: bool = False
    ca_file: FilePath | None = None
    certfile: FilePath | None = None
    keyfile: FilePath | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    reconnect_max_s: float = Field(30.0, gt=0)
    groups: tuple[str, ...] = ()

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_number(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set password or password_file, not both")
        if self.password_file is not None:
            try:  # unreadable: say so at load, not at the first connect
                read_secret(self.password_file)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        if not self.tls and (self.ca_file or self.certfile or self.keyfile):
            raise ValueError("ca_file, certfile and keyfile need tls = true")
        if self.keyfile is not None and self.certfile is None:
            raise ValueError("keyfile needs certfile (the client certificate)")
        return self

    def resolved_password(self) -> SecretStr | None:
        """The broker password, first found of: ``password`` (TOML or env
        ``EDGESPEAK_MQTT__PASSWORD``); the content of ``password_file``; the content of
        ``$CREDENTIALS_DIRECTORY/mqtt_password`` when that variable is set and the file exists
        (systemd ``LoadCredential=mqtt_password:…``). File contents lose trailing newlines.
        None: no password.

        Raises ConfigError naming the file (never its content) when it cannot be read.
        """
        if self.password is not None:
            return self.password
        if self.password_file is not None:
            return read_secret(self.password_file)
        return credential("mqtt_password")

    @field_validator("groups")
    @classmethod
    def _group_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name != sanitise_node_id(name):
                raise ValueError(f"group {name!r} must match [a-z0-9_-]+")
        return value

    @field_validator("prefix")
    @classmethod
    def _no_wildcards(cls, value: str) -> str:
        if not value or any(c in value for c in "#+") or value.startswith("/"):
            raise ValueError("must be a non-empty topic level without '#', '+' or a leading '/'")
        return value.rstrip("/")


class Prosody(_Section):
    """Fish ``prosody``: ``speed`` multiplier 0.5-2.0, ``volume`` in dB -20..20
    (shared/protocols.md §1)."""

    speed: float = Field(1.0, ge=0.5, le=2.0)
    volume: float = Field(0.0, ge=-20.0, le=20.0)


class Reference(_Section):
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


class TtsConfig(_Section):
    """The TTS provider: a Fish-live-protocol or Cartesia WebSocket endpoint (``provider``).

    ``url`` None means the embedded default: edgespeak's own local server at ``[server]``.
    The TTSRequest keys (``format`` … ``top_p``) are sent in every session's ``start``, with
    the ranges of shared/protocols.md §1; ``mp3`` is refused because the daemon cannot play it.
    Cartesia (shared/protocols.md §2): ``model`` is the ``model_id`` (default
    ``cartesia_protocol.DEFAULT_MODEL`` when unset), ``reference_id`` the voice id, the audio
    raw ``pcm_s16le`` (``format`` must be ``pcm``, ``sample_rate`` one Cartesia offers);
    ``max_buffer_delay_ms`` (ms) and ``language`` go into every request.
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


class AudioConfig(_Section):
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


class SoundsConfig(_Section):
    """Chimes: WAV files in ``dir`` named by their stem (``doorbell.wav`` → ``"doorbell"``),
    next to the built-in ones; a file in ``dir`` overrides a built-in of the same name."""

    dir: Path | None = None
    default_chime: str = "doorbell"


class Phrase(_Section):
    """A phrase to keep synthesised and pinned; ``voice`` None = ``[tts] reference_id``."""

    text: str = Field(min_length=1)
    voice: str | None = None

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class CacheConfig(_Section):
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


class FallbackConfig(_Section):
    """The offline fallback: espeak-ng in the daemon, used when the provider cannot speak."""

    enabled: bool = True
    voice: str = "en"


SessionFault = Literal["none", "error_before_audio", "error_after_audio", "close_after_audio"]


class ServerConfig(_Section):
    """``edgespeak serve``: the local server, Fish live protocol and Cartesia's WebSocket.

    ``test_*`` keys are test switches, off by default, so clients can meet real refusals end
    to end: ``test_refuse_status`` answers every handshake (both protocols), ``POST /v1/tts``
    and ``GET /model`` with that HTTP status; ``test_session_fault`` makes every session end
    with ``finish`` reason ``error`` before or after its first audio, or close the socket after
    its first audio.
    ``cartesia_idle_close_s``: a Cartesia socket without a context under way this many
    seconds is closed, as Cartesia's cloud does after 5 minutes.
    """

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    token: SecretStr | None = None
    voice: str = "en"
    close_after_finish: bool = False
    max_text_chars: int = Field(5000, ge=1)
    max_connections: int = Field(32, ge=1, le=10000)
    max_sessions: int = Field(8, ge=1, le=1000)
    test_refuse_status: int | None = Field(None, ge=400, le=599)
    test_session_fault: SessionFault = "none"
    cartesia_idle_close_s: float = Field(300.0, gt=0)


class DaemonConfig(_Section):
    """Announcement handling in ``edgespeak run``. ``state_dir`` keeps what must survive a
    restart (the volume set over MQTT)."""

    queue_max: int = Field(20, ge=1, le=1000)
    ttl_s: float = Field(60.0, gt=0)
    dedup_window_s: float = Field(60.0, ge=0)
    state_dir: Path = Path("/var/lib/edgespeak")
    ready_wait_s: float = Field(20.0, ge=0, le=600)


class LimitsConfig(_Section):
    """What one MQTT input may carry, and how often: ``max_payload_bytes`` (bytes of one
    announce or Hermes say payload), ``max_text_chars`` (characters of its text, after control
    characters are removed), ``rate`` (announcements per topic, in the ``limits`` library's
    notation: ``"20/minute"``, ``"5/second;60/hour"``)."""

    max_payload_bytes: int = Field(16384, ge=256, le=1024 * 1024)
    max_text_chars: int = Field(1000, ge=1, le=100_000)
    rate: str = "20/minute"

    @field_validator("rate")
    @classmethod
    def _rate_parses(cls, value: str) -> str:
        try:
            parse_many(value)
        except ValueError:
            raise ValueError(
                f'{value!r} is not a rate; write e.g. "20/minute" or "5/second;60/hour"'
            ) from None
        return value


class HomeAssistantConfig(_Section):
    """MQTT discovery for Home Assistant (shared/protocols.md §4)."""

    enabled: bool = True
    discovery_prefix: str = "homeassistant"
    status_topic: str = "homeassistant/status"


class HermesConfig(_Section):
    """Rhasspy Hermes compatibility (shared/protocols.md §3): ``hermes/tts/say`` and
    ``hermes/audioServer/<site_id>/playBytes/#`` for this ``site_id``."""

    enabled: bool = False
    site_id: str = "default"


class Settings(BaseSettings):
    """The whole configuration; frozen after load."""

    model_config = SettingsConfigDict(
        env_prefix="EDGESPEAK_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    node_id: str = Field(default_factory=lambda: sanitise_node_id(socket.gethostname()))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    mqtt: MqttConfig = MqttConfig()
    tts: TtsConfig = TtsConfig()
    audio: AudioConfig = AudioConfig()
    cache: CacheConfig = CacheConfig()
    fallback: FallbackConfig = FallbackConfig()
    server: ServerConfig = ServerConfig()
    daemon: DaemonConfig = DaemonConfig()
    limits: LimitsConfig = LimitsConfig()
    sounds: SoundsConfig = SoundsConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    hermes: HermesConfig = HermesConfig()

    @field_validator("node_id")
    @classmethod
    def _safe_node_id(cls, value: str) -> str:
        if value != sanitise_node_id(value):
            raise ValueError(f"must match [a-z0-9_-]+ (try {sanitise_node_id(value)!r})")
        return value

    @property
    def tts_url(self) -> str:
        """The provider WebSocket URL; the local server's (``/v1/tts/live``, or
        ``/tts/websocket`` for provider cartesia) when ``[tts] url`` is unset."""
        if self.tts.url:
            return self.tts.url
        host = "127.0.0.1" if self.server.host in ("0.0.0.0", "") else self.server.host
        cartesia = self.tts.provider == "cartesia"
        path = cartesia_protocol.WEBSOCKET_PATH if cartesia else "/v1/tts/live"
        return f"ws://{host}:{self.server.port}{path}"

    @property
    def tts_token(self) -> SecretStr | None:
        """Bearer token for the provider: :meth:`TtsConfig.resolved_api_key`, else (the local
        server) the server's token."""
        key = self.tts.resolved_api_key()
        if self.tts.url is None and key is None:
            return self.server.token
        return key


def load_config(path: Path | None = None) -> Settings:
    """Load the configuration from ``path`` (or the default path when it exists) and the env.

    Raises ConfigError naming the offending key (``mqtt.port: …``) for unknown keys, bad values,
    an unreadable file or bad TOML.
    """
    if path is None and DEFAULT_CONFIG_PATH.exists():
        path = DEFAULT_CONFIG_PATH
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    toml_path = path

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if toml_path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
            return tuple(sources)

    origin = f"{toml_path} and EDGESPEAK_* environment" if toml_path else "EDGESPEAK_* environment"
    try:
        return _Loaded()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {_describe(err)}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration ({origin}): {problems}") from None
    except (OSError, ValueError) as exc:  # tomllib.TOMLDecodeError is a ValueError, so is
        # pydantic-settings' error for malformed JSON in a nested env variable
        raise ConfigError(f"cannot read configuration ({origin}): {exc}") from None


def _describe(err: object) -> str:
    assert isinstance(err, dict)
    if err.get("type") == "extra_forbidden":
        return "unknown key"
    return str(err.get("msg", "invalid value"))
