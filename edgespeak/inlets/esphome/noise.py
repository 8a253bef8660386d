"""The Noise transport (``Noise_NNpsk0_25519_ChaChaPoly_SHA256``, the pre-shared key being the
32-byte ``[esphome] encryption_key``), with the noiseprotocol library.

Handshake, device side, as ESPHome does it:

1. The client's hello: an empty frame. Its body goes into the prologue
   ``b"NoiseAPIInit" + u16be(len(hello)) + hello``.
2. The device's hello, sent before the key is checked: ``0x01`` (the protocol chosen), the
   node name, ``0``, the MAC (lowercase hex, no colons), ``0``. Home Assistant's config flow
   probes with a wrong key just to learn the name from it.
3. The client's ``0x00 + noise message 1``; the device answers ``0x00 + noise message 2``, or
   ``0x01 + reason`` on failure: "Handshake MAC failure" for a wrong key (aioesphomeapi turns
   exactly that into InvalidEncryptionKeyAPIError).

Then every frame body is encrypted (nonces count up from 0 each way) and holds
``u16be(id), u16be(len), payload``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cryptography.exceptions import InvalidTag
from noise.connection import NoiseConnection
from noise.exceptions import NoiseInvalidMessage

from edgespeak.inlets.esphome.framing import noise_frame, read_noise_frame
from edgespeak.inlets.esphome.messages import NOISE_PROTOCOL, ProtocolError

log = logging.getLogger(__name__)
PROTOCOL = NOISE_PROTOCOL.encode()
PROLOGUE = b"NoiseAPIInit"
WRONG_KEY = b"Handshake MAC failure"


class NoiseTransport:
    """An established Noise session over one connection (see :func:`handshake`)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, noise: Any
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._noise = noise

    async def read(self) -> tuple[int, bytes]:
        body = await read_noise_frame(self._reader)
        try:
            plain = bytes(self._noise.decrypt(body))
        except (NoiseInvalidMessage, InvalidTag):
            raise ProtocolError("a frame failed to decrypt") from None
        if len(plain) < 4:
            raise ProtocolError(f"decrypted frame of {len(plain)} bytes, less than 4")
        size = int.from_bytes(plain[2:4], "big")
        if size > len(plain) - 4:
            raise ProtocolError("decrypted frame shorter than its header says")
        return int.from_bytes(plain[:2], "big"), plain[4 : 4 + size]

    def write(self, messages: list[tuple[int, bytes]]) -> None:
        for message_id, payload in messages:
            inner = message_id.to_bytes(2, "big") + len(payload).to_bytes(2, "big") + payload
            self._writer.write(noise_frame(bytes(self._noise.encrypt(inner))))


async def handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, key: bytes, name: str, mac: str
) -> NoiseTransport | None:
    """Run the device side of the handshake after the client's first byte (0x01) was read.

    ``key``: the 32-byte pre-shared key; ``name`` and ``mac`` (lowercase hex) go into the
    device's hello. Returns the transport, or None when the client's key is wrong or its
    handshake broken (it was told why). Raises asyncio.IncompleteReadError at EOF.
    """
    client_hello = await read_noise_frame(reader, started=True)
    writer.write(noise_frame(b"\x01" + name.encode() + b"\0" + mac.encode() + b"\0"))
    noise = NoiseConnection.from_name(PROTOCOL)
    noise.set_as_responder()
    noise.set_psks(key)
    noise.set_prologue(PROLOGUE + len(client_hello).to_bytes(2, "big") + client_hello)
    noise.start_handshake()
    message = await read_noise_frame(reader)
    try:
        if not message or message[0] != 0x00:
            raise ProtocolError("handshake message without its 0x00 status byte")
        noise.read_message(message[1:])
    except InvalidTag:
        log.warning("refused an ESPHome API client: wrong encryption key")
        writer.write(noise_frame(b"\x01" + WRONG_KEY))
        return None
    except Exception as exc:  # a malformed handshake: whatever noiseprotocol raises
        log.warning("refused an ESPHome API client: bad handshake (%s)", type(exc).__name__)
        writer.write(noise_frame(b"\x01Handshake error"))
        return None
    writer.write(noise_frame(b"\x00" + bytes(noise.write_message())))
    return NoiseTransport(reader, writer, noise)
