"""The native API's two framings, as ESPHome devices speak them.

Plaintext (no key): ``0x00, varuint(len(payload)), varuint(id), payload`` per message.
Noise (a key is set): ``0x01, u16be(len(body)), body`` per frame; after the handshake (see
:mod:`edgespeak.inlets.esphome.noise`) each body is one encrypted
``u16be(id), u16be(len(payload)), payload``.

A client whose first byte asks for the other framing is told so the way ESPHome does it, so
aioesphomeapi raises the right error: a plaintext client of an encrypted device gets the
Noise frame ``0x01 "Bad indicator byte"`` (RequiresEncryptionAPIError); a Noise client of a
plaintext device gets the raw bytes ``0x00 "Bad indicator byte"``
(EncryptionPlaintextAPIError).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from edgespeak.inlets.esphome.messages import MAX_PAYLOAD_BYTES, ProtocolError

PLAINTEXT = 0x00
NOISE = 0x01
BAD_INDICATOR = b"Bad indicator byte"


class Transport(Protocol):
    """One client's framing: whole messages in and out as ``(id, payload)``."""

    async def read(self) -> tuple[int, bytes]:
        """The next message. Raises ProtocolError, asyncio.IncompleteReadError at EOF."""
        ...

    def write(self, messages: list[tuple[int, bytes]]) -> None:
        """Queue ``messages`` on the socket (the caller drains)."""
        ...


def varuint(value: int) -> bytes:
    """``value`` (>= 0) as a protobuf varint: 7 bits per byte, low bits first."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


async def read_varuint(reader: asyncio.StreamReader) -> int:
    """A varint of at most 4 bytes (as aioesphomeapi caps them). Raises ProtocolError."""
    value = 0
    for shift in range(0, 28, 7):
        byte = (await reader.readexactly(1))[0]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
    raise ProtocolError("varint longer than 4 bytes")


class PlainTransport:
    """The plaintext framing. ``started``: the first frame's indicator byte was already read
    (the server reads it to choose the framing)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, started: bool
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._started = started

    async def read(self) -> tuple[int, bytes]:
        if self._started:
            self._started = False
        elif (await self._reader.readexactly(1))[0] != PLAINTEXT:
            raise ProtocolError("plaintext frame without its 0x00 indicator")
        length = await read_varuint(self._reader)
        message_id = await read_varuint(self._reader)
        if length > MAX_PAYLOAD_BYTES:
            raise ProtocolError(f"frame of {length} bytes, more than {MAX_PAYLOAD_BYTES}")
        return message_id, await self._reader.readexactly(length)

    def write(self, messages: list[tuple[int, bytes]]) -> None:
        self._writer.write(
            b"".join(
                bytes((PLAINTEXT,)) + varuint(len(payload)) + varuint(message_id) + payload
                for message_id, payload in messages
            )
        )


def noise_frame(body: bytes) -> bytes:
    """One Noise-framing frame around ``body`` (at most 65535 bytes)."""
    return bytes((NOISE,)) + len(body).to_bytes(2, "big") + body


async def read_noise_frame(reader: asyncio.StreamReader, *, started: bool = False) -> bytes:
    """The body of the next Noise-framing frame (``started``: its 0x01 was already read).
    Raises ProtocolError for another indicator."""
    if not started and (await reader.readexactly(1))[0] != NOISE:
        raise ProtocolError("Noise frame without its 0x01 indicator")
    size = int.from_bytes(await reader.readexactly(2), "big")
    return await reader.readexactly(size)


def refusal(indicator: int, *, encrypted: bool) -> bytes | None:
    """What to answer a client whose first byte is ``indicator`` when the device is
    ``encrypted`` or not: None when the framing matches, else the bytes that tell the client
    (see the module docstring)."""
    if encrypted and indicator != NOISE:
        return noise_frame(bytes((NOISE,)) + BAD_INDICATOR)
    if not encrypted and indicator != PLAINTEXT:
        return bytes((PLAINTEXT,)) + BAD_INDICATOR
    return None
