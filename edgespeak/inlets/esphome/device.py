"""Who the device is to Home Assistant: name, MAC-like id, model, project; stable across
restarts (Home Assistant keys the device on the MAC, the entity on its key and object id)."""

from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass
from typing import Any

from edgespeak import __version__
from edgespeak.config import Settings
from edgespeak.inlets.esphome.messages import ESPHOME_VERSION, NOISE_PROTOCOL, pb

PROJECT_NAME = "edgespeak.speaker"  # "maker.model": Home Assistant splits it on the dot
MANUFACTURER = "edgespeak"


def esphome_name(node_id: str) -> str:
    """``node_id`` as an ESPHome node name (also the mDNS host name): ``[a-z0-9-]``."""
    return node_id.replace("_", "-").strip("-") or "edgespeak"


def node_mac(node_id: str) -> str:
    """A MAC-like id derived from ``node_id`` alone: ``AA:BB:…`` upper-case, locally
    administered and unicast (first byte ``x2``, ``x6``, ``xA`` or ``xE``), so it never
    collides with a real network card's and stays the same across restarts."""
    raw = bytearray(hashlib.sha256(f"edgespeak:{node_id}".encode()).digest()[:6])
    raw[0] = (raw[0] & 0xFC) | 0x02
    return ":".join(f"{b:02X}" for b in raw)


@dataclass(frozen=True)
class Device:
    """The device's identity. ``name``: ESPHome node name; ``friendly_name``: shown in Home
    Assistant; ``mac``: ``AA:BB:CC:DD:EE:FF``; ``encrypted``: an encryption key is set."""

    name: str
    friendly_name: str
    mac: str
    encrypted: bool

    @classmethod
    def from_settings(cls, settings: Settings, *, encrypted: bool) -> Device:
        """The identity of this node (``node_id``, ``[esphome] friendly_name``)."""
        name = esphome_name(settings.node_id)
        friendly = settings.esphome.friendly_name or settings.node_id
        return cls(name, friendly, node_mac(settings.node_id), encrypted)

    @property
    def mac_hex(self) -> str:
        """The MAC as lowercase hex without colons (the server hello's and mDNS's form)."""
        return self.mac.replace(":", "").lower()

    def info(self) -> Any:
        """The DeviceInfoResponse."""
        return pb.DeviceInfoResponse(
            uses_password=False,
            name=self.name,
            friendly_name=self.friendly_name,
            mac_address=self.mac,
            esphome_version=ESPHOME_VERSION,
            model=_model(),
            manufacturer=MANUFACTURER,
            project_name=PROJECT_NAME,
            project_version=__version__,
            # Set without a key, Home Assistant would push one over plaintext
            # (NoiseEncryptionSetKeyRequest), which edgespeak does not take.
            api_encryption_supported=self.encrypted,
        )

    def txt(self) -> dict[str, str]:
        """The mDNS TXT records of ``_esphomelib._tcp.local.`` (Home Assistant needs ``mac``;
        ``api_encryption`` tells it a key is required)."""
        records = {
            "friendly_name": self.friendly_name,
            "version": ESPHOME_VERSION,
            "mac": self.mac_hex,
            "platform": "HOST",
            "board": "host",
            "network": "wifi",
            "project_name": PROJECT_NAME,
            "project_version": __version__,
        }
        if self.encrypted:
            records["api_encryption"] = NOISE_PROTOCOL
        return records


def _model() -> str:
    """The board, e.g. "Raspberry Pi Zero 2 W Rev 1.0", else the machine type."""
    try:
        with open("/proc/device-tree/model", "rb") as f:
            model = f.read().rstrip(b"\0").decode(errors="replace").strip()
    except OSError:
        model = ""
    return model or f"Linux {platform.machine()}"
