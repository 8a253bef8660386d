"""Configuration: one frozen pydantic-settings tree.

Sources, strongest first: environment ``EDGESPEAK_<SECTION>__<KEY>`` (``EDGESPEAK_NODE_ID`` for
top-level keys), then the TOML file (``--config PATH``, else ``/etc/edgespeak/config.toml`` when
it exists), then the defaults below. Every key is documented in ``config.example.toml``.
Unknown keys and bad values raise :class:`~edgespeak.base.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from edgespeak.base.errors import ConfigError
from edgespeak.config.common import sanitise_node_id
from edgespeak.config.esphome import EsphomeConfig
from edgespeak.config.group import GroupConfig
from edgespeak.config.mqtt import MqttConfig
from edgespeak.config.sections import (
    AudioConfig,
    CacheConfig,
    DaemonConfig,
    FallbackConfig,
    HermesConfig,
    HomeAssistantConfig,
    LimitsConfig,
    ServerConfig,
    SoundsConfig,
)
from edgespeak.config.tts import TtsConfig
from edgespeak.wire import cartesia as cartesia_protocol

DEFAULT_CONFIG_PATH = Path("/etc/edgespeak/config.toml")


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
    esphome: EsphomeConfig = EsphomeConfig()
    group: GroupConfig = GroupConfig()

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
