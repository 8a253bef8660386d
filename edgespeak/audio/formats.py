"""Wire formats → PCM, incrementally: ``pcm`` passthrough, streamed ``wav``, Ogg ``opus``.

Everything downstream of a decoder sees bytes of s16le mono PCM at a known rate in Hz.
Source for the formats: docs/protocols.md §4 and §5.
"""

from __future__ import annotations

import struct
from typing import Protocol

from edgespeak.base.errors import AudioFormatError
from edgespeak.base.pcm import PLAYABLE_FORMATS, FrameCarry


class PcmDecoder(Protocol):
    """Incremental decoder: wire bytes in, bytes of s16le mono PCM out."""

    @property
    def rate_hz(self) -> int | None:
        """Sample rate of the output in Hz, once known (a WAV's is known after its header)."""
        ...

    def feed(self, data: bytes) -> bytes:
        """Decode what can be decoded; buffer the rest. Raises AudioFormatError."""
        ...

    def finish(self) -> bytes:
        """Flush at end of stream. Raises AudioFormatError if the stream was truncated."""
        ...


class RawPcmDecoder:
    """``pcm``: raw s16le mono samples; keeps an odd trailing byte for the next chunk."""

    def __init__(self, rate_hz: int) -> None:
        self._rate = rate_hz
        self._carry = FrameCarry()

    @property
    def rate_hz(self) -> int:
        return self._rate

    def feed(self, data: bytes) -> bytes:
        return self._carry.whole(data)

    def finish(self) -> bytes:
        if self._carry.pending:
            raise AudioFormatError("pcm stream ended in the middle of a sample")
        return b""


class WavStreamDecoder:
    """``wav``: RIFF header first (sizes may be the 0xFFFFFFFF placeholder), then s16le PCM.

    Only 16-bit mono PCM (format tag 1) plays; anything else raises AudioFormatError.
    """

    def __init__(self) -> None:
        self._head = b""
        self._rate: int | None = None
        self._pcm: RawPcmDecoder | None = None

    @property
    def rate_hz(self) -> int | None:
        return self._rate

    def feed(self, data: bytes) -> bytes:
        if self._pcm is not None:
            return self._pcm.feed(data)
        self._head += data
        parsed = self._parse_header()
        if parsed is None:
            return b""
        rate, offset = parsed
        self._rate = rate
        self._pcm = RawPcmDecoder(rate)
        rest, self._head = self._head[offset:], b""
        return self._pcm.feed(rest)

    def _parse_header(self) -> tuple[int, int] | None:
        head = self._head
        if len(head) < 12:
            return None
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise AudioFormatError("wav stream does not start with a RIFF/WAVE header")
        pos, rate = 12, None
        while len(head) >= pos + 8:
            chunk_id, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
            if chunk_id == b"data":
                if rate is None:
                    raise AudioFormatError("wav 'data' chunk came before 'fmt '")
                return rate, pos + 8
            if len(head) < pos + 8 + size:
                return None
            if chunk_id == b"fmt ":
                tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", head, pos + 8)
                if tag != 1 or bits != 16 or channels != 1:
                    raise AudioFormatError(
                        f"wav must be 16-bit mono PCM; got format {tag}, {channels} channels, "
                        f"{bits} bits"
                    )
            pos += 8 + size + (size & 1)
        return None

    def finish(self) -> bytes:
        if self._pcm is None:
            raise AudioFormatError("wav stream ended before its header was complete")
        return self._pcm.finish()


def make_decoder(format: str, rate_hz: int) -> PcmDecoder:
    """The decoder for a wire ``format``; ``rate_hz`` is the rate asked for (pcm's rate).

    Raises AudioFormatError for a format that cannot be played (mp3).
    """
    if format == "pcm":
        return RawPcmDecoder(rate_hz)
    if format == "wav":
        return WavStreamDecoder()
    if format == "opus":
        from edgespeak.audio.opus import OggOpusDecoder

        return OggOpusDecoder()
    raise AudioFormatError(
        f"format {format!r} cannot be played; use one of {', '.join(PLAYABLE_FORMATS)}"
    )
