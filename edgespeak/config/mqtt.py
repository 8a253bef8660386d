"""``[mqtt]``: the broker link."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    FilePath,
    SecretStr,
    field_validator,
    model_validator,
)

from edgespeak.base.errors import ConfigError
from edgespeak.config.common import Section, sanitise_node_id
from edgespeak.config.secrets import credential, read_secret


class MqttConfig(Section):
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
