"""PCM as it flows through edgespeak: s16le mono, one constant for its frame size, the WAV
header that wraps it, and the carry of a half frame split across chunks.

Every stage downstream of a decoder sees bytes of s16le mono PCM at a rate in Hz; a frame is
one sample of 2 bytes. WAV layout: RIFF/WAVE with one 16-byte ``fmt`` chunk (PCM, 1 channel,
16 bits) and one ``data`` chunk (docs/protocols.md §4).
"""

from __future__ import annotations

import struct

FRAME_BYTES = 2  # bytes per frame of s16le mono PCM (one 16-bit sample)
PLAYABLE_FORMATS = ("pcm", "wav", "opus")  # the wire formats the daemon decodes
STREAMING_SIZE = 0xFFFFFFFF  # RIFF/data size placeholder of a WAV whose length is not known yet
WAV_HEADER_BYTES = 44


def wav_header(rate_hz: int, *, data_bytes: int = STREAMING_SIZE) -> bytes:
    """The 44-byte header of a mono 16-bit PCM WAV at ``rate_hz`` Hz holding ``data_bytes``
    bytes of samples, byte for byte what :mod:`wave` writes; the default is the streaming
    placeholder 0xFFFFFFFF (length not known yet) in both sizes."""
    riff = STREAMING_SIZE if data_bytes == STREAMING_SIZE else 36 + data_bytes
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        riff,
        b"WAVE",
        b"fmt ",
        16,  # fmt chunk size
        1,  # WAVE_FORMAT_PCM
        1,  # channels
        rate_hz,
        rate_hz * FRAME_BYTES,  # bytes per second
        FRAME_BYTES,  # block align
        8 * FRAME_BYTES,  # bits per sample
        b"data",
        data_bytes,
    )


class FrameCarry:
    """Cuts a stream of byte chunks at whole frames, keeping a trailing half frame for the
    next chunk (a provider may split a sample across two messages)."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending = b""  # 0 or 1 byte: the start of a frame whose rest has not come yet

    def whole(self, data: bytes) -> bytes:
        """``data`` after what was pending, cut to whole frames; the rest stays pending."""
        if self.pending:
            data = self.pending + data
        cut = len(data) - len(data) % FRAME_BYTES
        self.pending = bytes(data[cut:])
        return data[:cut] if cut < len(data) else data
