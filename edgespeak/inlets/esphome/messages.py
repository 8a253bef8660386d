"""The native API's messages: aioesphomeapi's generated protobuf classes and their ids.

Each message travels with the numeric id api.proto gives it (``option (id)``);
``aioesphomeapi.core.MESSAGE_TYPE_TO_PROTO`` is that table. The classes are built at import
from the descriptor, so they are typed ``Any`` here.
"""

from __future__ import annotations

from typing import Any

from aioesphomeapi import api_pb2
from aioesphomeapi.core import MESSAGE_TYPE_TO_PROTO

from edgespeak.base.errors import RequestError

pb: Any = api_pb2
BY_ID: dict[int, Any] = dict(MESSAGE_TYPE_TO_PROTO)
ID_OF: dict[Any, int] = {cls: message_id for message_id, cls in BY_ID.items()}

# 1.11 and later: clients read the media player's feature_flags (older ones derive them from
# supports_pause). Before 1.15: no DeviceCapabilitiesRequest is needed.
API_VERSION = (1, 14)
ESPHOME_VERSION = "2025.9.0"  # what the device claims to run: HA gates features on it
NOISE_PROTOCOL = "Noise_NNpsk0_25519_ChaChaPoly_SHA256"  # the only one ESPHome speaks
MAX_PAYLOAD_BYTES = 65535  # one message's payload; longer frames end the connection

# Home Assistant's MediaPlayerEntityFeature bits (aioesphomeapi.model has the same values).
PAUSE = 1 << 0
VOLUME_SET = 1 << 2
VOLUME_MUTE = 1 << 3
PLAY_MEDIA = 1 << 9
STOP = 1 << 12
BROWSE_MEDIA = 1 << 17  # Home Assistant's own media browser: it resolves what is picked
MEDIA_ANNOUNCE = 1 << 20


class ProtocolError(RequestError):
    """The peer broke the framing or the handshake: the connection ends."""


def encode(message: Any) -> tuple[int, bytes]:
    """``(id, payload)`` of a protobuf message of the API."""
    return ID_OF[type(message)], message.SerializeToString()


def decode(message_id: int, payload: bytes) -> Any | None:
    """The message ``message_id`` parsed from ``payload``; None for an id this API version
    does not know (skipped, as ESPHome does). Raises ProtocolError for a payload that does not
    parse."""
    cls = BY_ID.get(message_id)
    if cls is None:
        return None
    try:
        return cls.FromString(payload)
    except Exception as exc:  # google.protobuf.message.DecodeError, without importing it
        raise ProtocolError(f"message {message_id} does not parse: {exc}") from None
