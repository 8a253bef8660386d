"""A small incremental reader and writer for the Ogg container (RFC 3533), one logical stream.

Page layout (RFC 3533 §6): a 27-byte header — capture pattern ``OggS``, version 0, header-type
flags (0x01 continued packet, 0x02 beginning of stream, 0x04 end of stream), 64-bit granule
position, 32-bit serial number, 32-bit page sequence number, 32-bit CRC and the number of
segments — then the segment (lacing) table and the body. All integers are little-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from edgespeak.base.errors import AudioFormatError

__all__ = ["OggPacket", "OggPacketReader", "OggPageWriter", "ogg_crc32"]

_HEADER = struct.Struct("<4sBBqIIIB")  # RFC 3533 §6; 27 bytes
_CAPTURE = b"OggS"
_FLAG_CONTINUED = 0x01
_FLAG_BOS = 0x02
_FLAG_EOS = 0x04
_CRC_OFFSET = 22  # the CRC field is bytes 22..25 of the page header
_MAX_SEGMENTS = 255


def _make_crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        reg = byte << 24
        for _ in range(8):
            reg = ((reg << 1) ^ 0x04C11DB7) if reg & 0x80000000 else reg << 1
        table.append(reg & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _make_crc_table()


def ogg_crc32(data: bytes) -> int:
    """Return the Ogg page checksum of ``data`` as an unsigned 32-bit int.

    RFC 3533 §6 ("CRC_checksum"): polynomial 0x04C11DB7, initial value 0, no bit reflection,
    no final XOR, computed over the whole page with the CRC field set to zero. This is not
    ``zlib.crc32`` (which is reflected and inverted), hence the table-driven loop.
    """
    crc = 0
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    return crc


@dataclass(frozen=True)
class OggPacket:
    """One reassembled packet of the logical stream.

    ``granule_position`` is the page's granule position (codec-defined units; for Opus, samples
    at 48 kHz, RFC 7845 §4) when this packet is the last packet completed on its page, else
    None; also None when the page granule is -1 ("no packet finishes here", RFC 3533 §6).
    ``bos`` is True when the page the packet completes on has the beginning-of-stream flag,
    ``eos`` when it has the end-of-stream flag.
    """

    data: bytes
    granule_position: int | None
    bos: bool
    eos: bool


class OggPacketReader:
    """Incremental Ogg demuxer for a single logical stream (RFC 3533).

    Feed bytes split anywhere (one byte at a time works); complete packets come back in order.
    Packets spanning pages (a final lacing value of 255 and the next page's continued flag,
    RFC 3533 §6 "segment_table") are reassembled.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._partial: bytearray | None = None  # packet continued onto the next page
        self._serial: int | None = None
        self._next_seq = 0
        self._eos_seen = False
        self._offset = 0  # stream offset of self._buf[0], for error messages

    @property
    def eos_seen(self) -> bool:
        """True once a page with the end-of-stream flag has been read."""
        return self._eos_seen

    def feed(self, data: bytes) -> list[OggPacket]:
        """Consume ``data`` (any number of bytes) and return every packet it completed.

        Raises AudioFormatError on a bad page: wrong capture pattern, version != 0, CRC
        mismatch, a second serial number (chained or multiplexed streams are not supported),
        a page sequence gap, a missing or misplaced beginning-of-stream flag, a page after the
        end-of-stream page, or continued-packet flags that do not match the lacing.
        """
        self._buf += data
        packets: list[OggPacket] = []
        while (page := self._take_page()) is not None:
            packets.extend(self._split(page))
        return packets

    def finish(self) -> None:
        """Declare the byte stream over.

        Raises AudioFormatError if it ended inside a page or inside a packet that spans pages.
        """
        if self._buf:
            raise AudioFormatError(
                f"Ogg stream truncated: {len(self._buf)} bytes of an incomplete page at byte "
                f"{self._offset}"
            )
        if self._partial is not None:
            raise AudioFormatError("Ogg stream truncated inside a packet that spans pages")

    def _take_page(self) -> bytes | None:
        buf = self._buf
        head = bytes(buf[:4])
        if head != _CAPTURE[: len(head)]:
            raise AudioFormatError(
                f"bad Ogg capture pattern at byte {self._offset}: {head!r}, expected b'OggS'"
            )
        if len(buf) >= 5 and buf[4] != 0:
            raise AudioFormatError(
                f"unsupported Ogg version {buf[4]} at byte {self._offset} (only 0 exists)"
            )
        if len(buf) < _HEADER.size:
            return None
        nseg = buf[_HEADER.size - 1]
        body_start = _HEADER.size + nseg
        if len(buf) < body_start:
            return None
        total = body_start + sum(buf[_HEADER.size : body_start])
        if len(buf) < total:
            return None
        page = bytes(buf[:total])
        del buf[:total]
        stored = struct.unpack_from("<I", page, _CRC_OFFSET)[0]
        computed = ogg_crc32(page[:_CRC_OFFSET] + b"\0\0\0\0" + page[_CRC_OFFSET + 4 :])
        if stored != computed:
            raise AudioFormatError(
                f"Ogg page CRC mismatch at byte {self._offset}: stored {stored:#010x}, "
                f"computed {computed:#010x}"
            )
        self._offset += total
        return page

    def _split(self, page: bytes) -> list[OggPacket]:
        _, _, flags, granule, serial, seq, _, nseg = _HEADER.unpack_from(page)
        bos, eos = bool(flags & _FLAG_BOS), bool(flags & _FLAG_EOS)
        if self._serial is None:
            if not bos:
                raise AudioFormatError("first Ogg page lacks the beginning-of-stream flag")
            self._serial = serial
        elif serial != self._serial:
            raise AudioFormatError(
                f"second Ogg logical stream (serial {serial:#x}, first was {self._serial:#x}); "
                "only a single stream is supported"
            )
        elif bos:
            raise AudioFormatError(f"beginning-of-stream flag on Ogg page {seq}, not the first")
        if self._eos_seen:
            raise AudioFormatError(f"Ogg page {seq} after the end-of-stream page")
        if seq != self._next_seq:
            raise AudioFormatError(f"Ogg page sequence gap: expected {self._next_seq}, got {seq}")
        self._next_seq = (seq + 1) & 0xFFFFFFFF
        self._eos_seen = eos
        continued = bool(flags & _FLAG_CONTINUED)
        if continued != (self._partial is not None):
            what = (
                "continued flag but no packet to continue"
                if continued
                else ("no continued flag but the previous page ended inside a packet")
            )
            raise AudioFormatError(f"Ogg page {seq}: {what}")

        lacing = page[_HEADER.size : _HEADER.size + nseg]
        pos = _HEADER.size + nseg
        current = self._partial if self._partial is not None else bytearray()
        completed: list[bytes] = []
        for value in lacing:
            current += page[pos : pos + value]
            pos += value
            if value < 255:
                completed.append(bytes(current))
                current = bytearray()
        open_end = lacing[-1] == 255 if nseg else continued  # packet goes on to the next page
        self._partial = current if open_end else None
        if eos and self._partial is not None:
            raise AudioFormatError(f"Ogg page {seq}: end-of-stream page ends inside a packet")

        last_granule = None if granule == -1 else granule
        return [
            OggPacket(data, last_granule if i == len(completed) - 1 else None, bos, eos)
            for i, data in enumerate(completed)
        ]


class OggPageWriter:
    """Builds the pages of one logical stream with serial number ``serial`` (0 .. 2**32-1).

    Sequence numbers start at 0 and increase by one per page (RFC 3533 §6).
    """

    def __init__(self, serial: int) -> None:
        if not 0 <= serial <= 0xFFFFFFFF:
            raise ValueError(f"Ogg serial must fit in 32 bits, got {serial}")
        self._serial = serial
        self._seq = 0

    def page(
        self,
        packets: list[bytes],
        granule_position: int,
        *,
        bos: bool = False,
        eos: bool = False,
    ) -> bytes:
        """Return one complete page (bytes) holding ``packets`` whole, CRC filled in.

        ``granule_position`` is in codec units (-1 means no packet finishes on the page).
        Each packet of n bytes takes n // 255 + 1 lacing values (RFC 3533 §6); raises
        ValueError if they need more than 255, since this writer never splits packets.
        """
        lacing = bytearray()
        for packet in packets:
            full, rest = divmod(len(packet), 255)
            lacing += b"\xff" * full + bytes((rest,))
        if len(lacing) > _MAX_SEGMENTS:
            raise ValueError(
                f"packets need {len(lacing)} lacing values; one Ogg page holds at most 255"
            )
        flags = (_FLAG_BOS if bos else 0) | (_FLAG_EOS if eos else 0)
        header = _HEADER.pack(
            _CAPTURE, 0, flags, granule_position, self._serial, self._seq, 0, len(lacing)
        )
        page = bytearray(header + lacing + b"".join(packets))
        struct.pack_into("<I", page, _CRC_OFFSET, ogg_crc32(bytes(page)))
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return bytes(page)
