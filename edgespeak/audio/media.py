"""Media files → s16le mono PCM at the file's own rate, incrementally, as they download.

One decoder per format :func:`~edgespeak.audio.sniff.sniff` recognises: WAV here (any PCM or
float WAV, streamed, its sizes possibly the 0 / 0xFFFFFFFF "not known" placeholders), Ogg Opus
by :class:`~edgespeak.audio.opus.OggOpusDecoder` (mono), FLAC, MP3 and Ogg Vorbis by
:class:`~edgespeak.audio.pulled.PulledDecoder` (the ``miniaudio`` library, imported only
then). Channels are averaged to mono.
"""

from __future__ import annotations

import struct
from typing import Protocol

import numpy as np

from edgespeak.audio.sniff import MediaInfo
from edgespeak.audio.wav import to_float_mono, to_s16
from edgespeak.base.errors import AudioFormatError

_WAVE_PCM, _WAVE_FLOAT, _WAVE_EXTENSIBLE = 1, 3, 0xFFFE


class MediaDecoder(Protocol):
    """Encoded bytes in (any split), bytes of s16le mono PCM at ``rate_hz`` Hz out."""

    @property
    def rate_hz(self) -> int | None:
        """The output's sample rate in Hz once known."""
        ...

    def feed(self, data: bytes) -> bytes:
        """Decode what ``data`` completes; may block for the decoding (call it in a thread).
        Raises AudioFormatError."""
        ...

    def finish(self) -> bytes:
        """The rest, at end of input. Raises AudioFormatError when the stream was cut short
        (as far as the format can tell) or held no audio."""
        ...

    def close(self) -> None:
        """Release the decoder (at any time; idempotent, never raises)."""
        ...


def open_decoder(info: MediaInfo) -> MediaDecoder:
    """The decoder for ``info``'s format, to be fed the stream from its first byte."""
    if info.format == "wav":
        return WavMediaDecoder()
    if info.format == "opus":
        return _OpusMedia()
    from edgespeak.audio.pulled import PulledDecoder  # miniaudio: the [esphome] extra

    return PulledDecoder(info)


class WavMediaDecoder:
    """A WAV stream: integer PCM of 8, 16, 24 or 32 bits or float of 32 or 64 bits (format
    tags 1, 3 and WAVE_FORMAT_EXTENSIBLE of those), any channel count. A ``data`` size of 0 or
    0xFFFFFFFF means "until the stream ends"; any other size is the length, and a stream that
    ends before it is truncated."""

    def __init__(self) -> None:
        self._head = b""
        self._rate: int | None = None
        self._channels = 1
        self._width = 2
        self._float = False
        self._remaining: int | None = None  # bytes of the data chunk still to come
        self._carry = b""  # the start of a frame split across feeds
        self._frames = 0

    @property
    def rate_hz(self) -> int | None:
        return self._rate

    def feed(self, data: bytes) -> bytes:
        if self._rate is None:
            self._head += data
            offset = self._parse_header()
            if offset is None:
                return b""
            data, self._head = self._head[offset:], b""
        if self._remaining is not None:
            data = data[: self._remaining]  # chunks after the data chunk are not audio
            self._remaining -= len(data)
        data = self._carry + data
        block = self._width * self._channels
        whole = len(data) - len(data) % block
        self._carry = data[whole:]
        self._frames += whole // block
        return self._convert(data[:whole])

    def finish(self) -> bytes:
        if self._rate is None:
            raise AudioFormatError("the WAV stream ended inside its header")
        if self._remaining:
            raise AudioFormatError(
                f"truncated WAV: {self._remaining} bytes of its audio never came"
            )
        if self._frames == 0:
            raise AudioFormatError("the WAV file holds no audio")
        return b""

    def close(self) -> None:
        return None

    def _parse_header(self) -> int | None:
        """Offset of the samples once the header is complete (format checked), else None."""
        head, pos = self._head, 12
        while len(head) >= pos + 8:
            chunk, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
            if chunk == b"data":
                if self._rate is None:
                    raise AudioFormatError("bad WAV: its 'data' chunk comes before 'fmt '")
                self._remaining = None if size in (0, 0xFFFFFFFF) else size
                return pos + 8
            if len(head) < pos + 8 + size:
                return None
            if chunk == b"fmt ":
                self._format(head[pos + 8 : pos + 8 + size])
            pos += 8 + size + (size & 1)
        return None

    def _format(self, fmt: bytes) -> None:
        if len(fmt) < 16:
            raise AudioFormatError(f"bad WAV: a 'fmt ' chunk of {len(fmt)} bytes")
        tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
        if tag == _WAVE_EXTENSIBLE and len(fmt) >= 26:
            tag = struct.unpack_from("<H", fmt, 24)[0]  # the sub-format GUID's first field
        width = bits // 8
        playable = (tag == _WAVE_PCM and width in (1, 2, 3, 4)) or (
            tag == _WAVE_FLOAT and width in (4, 8)
        )
        if not playable or bits % 8 or channels < 1 or rate < 1:
            raise AudioFormatError(
                f"unsupported WAV: format {tag}, {bits}-bit, {channels} channels, {rate} Hz"
            )
        self._rate, self._channels, self._width = rate, channels, width
        self._float = tag == _WAVE_FLOAT

    def _convert(self, frames: bytes) -> bytes:
        if not frames:
            return b""
        if self._width == 2 and self._channels == 1 and not self._float:
            return frames  # already s16le mono
        if self._float:
            values = np.frombuffer(frames, dtype=f"<f{self._width}").astype(np.float64)
            mono = values.reshape(-1, self._channels).mean(axis=1)
        else:
            mono = to_float_mono(frames, self._width, self._channels)
        return to_s16(mono * 32768.0)


class _OpusMedia:
    """Ogg Opus (mono) through the TTS path's decoder, with the media decoder's interface."""

    def __init__(self) -> None:
        from edgespeak.audio.opus import OggOpusDecoder

        self._decoder = OggOpusDecoder()
        self._bytes = 0

    @property
    def rate_hz(self) -> int:
        return self._decoder.rate_hz

    def feed(self, data: bytes) -> bytes:
        pcm = self._decoder.feed(data)
        self._bytes += len(pcm)
        return pcm

    def finish(self) -> bytes:
        pcm = self._decoder.finish()
        if self._bytes + len(pcm) == 0:
            raise AudioFormatError("the Ogg Opus stream holds no audio")
        return pcm

    def close(self) -> None:
        return None
