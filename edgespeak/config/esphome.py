"""``[esphome]``: the ESPHome native API, so Home Assistant sees a media player.

Off by default. Its libraries (``pip install 'edgespeak[esphome]'``) are imported only when
``enabled``. The encryption key is the one ESPHome users paste into Home Assistant: base64 of
32 bytes. It is a secret: never logged, never put in a message.
"""

from __future__ import annotations

import base64
import binascii

from pydantic import Field, SecretStr, field_validator

from edgespeak.base.errors import ConfigError
from edgespeak.config.common import Section
from edgespeak.config.secrets import credential

KEY_BYTES = 32  # a Noise pre-shared key


def decode_key(text: str) -> bytes:
    """The 32 raw bytes of an ESPHome encryption key written as base64 (standard alphabet,
    padded, surrounding whitespace ignored). Raises ValueError saying what is wrong, never
    quoting the key."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "is not base64 (ESPHome keys look like 44 characters ending in '=')"
        ) from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"decodes to {len(raw)} bytes; an ESPHome key is {KEY_BYTES} bytes")
    return raw


class EsphomeConfig(Section):
    """The ESPHome native API server (Home Assistant's ESPHome integration connects to it).

    ``host``/``port``: where it listens (TCP). ``encryption_key``: base64 of 32 bytes; set, the
    server speaks only the Noise-encrypted transport, unset only plaintext (see
    :meth:`resolved_key`). ``friendly_name``: the device's name in Home Assistant (None: the
    node id). ``discovery``: advertise ``_esphomelib._tcp.local.`` over mDNS.
    ``client_timeout_s``: a client silent this long (seconds) is dropped; a ping is sent to it
    at half of it. ``max_seconds``/``max_mb``: the longest media URL played (seconds of audio)
    and the most bytes fetched (MiB). ``fetch_timeout_s``: seconds allowed to connect to a
    media URL and between two reads of it.
    """

    enabled: bool = False
    host: str = "0.0.0.0"
    port: int = Field(6053, ge=0, le=65535)
    encryption_key: SecretStr | None = None
    friendly_name: str | None = Field(None, min_length=1, max_length=120)
    discovery: bool = True
    client_timeout_s: float = Field(90.0, ge=0.5, le=3600)
    max_seconds: float = Field(600.0, gt=0, le=86400)
    max_mb: float = Field(64.0, gt=0, le=4096)
    fetch_timeout_s: float = Field(10.0, gt=0, le=600)

    @field_validator("encryption_key")
    @classmethod
    def _valid_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            decode_key(value.get_secret_value())
        return value

    @property
    def max_bytes(self) -> int:
        """``max_mb`` in bytes."""
        return int(self.max_mb * 1024 * 1024)

    def resolved_key(self) -> bytes | None:
        """The 32-byte Noise key, first found of: ``encryption_key`` (TOML or
        ``EDGESPEAK_ESPHOME__ENCRYPTION_KEY``); the systemd credential ``esphome_key``
        (``/etc/credstore/edgespeak.esphome_key``). None: plaintext. Raises ConfigError when
        the credential cannot be read or is not a valid key (never quoting it)."""
        if self.encryption_key is not None:
            return decode_key(self.encryption_key.get_secret_value())
        secret = credential("esphome_key")
        if secret is None:
            return None
        try:
            return decode_key(secret.get_secret_value())
        except ValueError as exc:
            raise ConfigError(f"credential esphome_key {exc}") from None
