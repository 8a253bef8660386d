"""Configuration: one frozen pydantic-settings tree, a module per concern.

Sources, strongest first: environment ``EDGESPEAK_<SECTION>__<KEY>`` (``EDGESPEAK_NODE_ID`` for
top-level keys), then the TOML file (``--config PATH``, else ``/etc/edgespeak/config.toml`` when
it exists), then the defaults. Every key is documented in ``config.example.toml``. Unknown keys
and bad values raise :class:`~edgespeak.base.errors.ConfigError` naming the key.
"""

from edgespeak.config.common import AudioFormat, Latency, Section, sanitise_node_id
from edgespeak.config.esphome import EsphomeConfig
from edgespeak.config.group import GroupConfig
from edgespeak.config.mqtt import MqttConfig
from edgespeak.config.secrets import CREDSTORE, credential, read_secret
from edgespeak.config.sections import (
    AudioConfig,
    CacheConfig,
    DaemonConfig,
    FallbackConfig,
    HermesConfig,
    HomeAssistantConfig,
    LimitsConfig,
    Phrase,
    ServerConfig,
    SessionFault,
    SoundsConfig,
)
from edgespeak.config.settings import DEFAULT_CONFIG_PATH, Settings, load_config
from edgespeak.config.tts import MAX_REFERENCES_BYTES, OPUS_KBPS, Prosody, Reference, TtsConfig

__all__ = [
    "CREDSTORE",
    "DEFAULT_CONFIG_PATH",
    "MAX_REFERENCES_BYTES",
    "OPUS_KBPS",
    "AudioConfig",
    "AudioFormat",
    "CacheConfig",
    "DaemonConfig",
    "EsphomeConfig",
    "FallbackConfig",
    "GroupConfig",
    "HermesConfig",
    "HomeAssistantConfig",
    "Latency",
    "LimitsConfig",
    "MqttConfig",
    "Phrase",
    "Prosody",
    "Reference",
    "Section",
    "ServerConfig",
    "SessionFault",
    "Settings",
    "SoundsConfig",
    "TtsConfig",
    "credential",
    "load_config",
    "read_secret",
    "sanitise_node_id",
]
