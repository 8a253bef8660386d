"""What a media file is, from its first bytes: WAV, FLAC, MP3, Ogg Vorbis or Ogg Opus.

:func:`sniff` reads the magic numbers and the header fields a decoder needs before it can
produce audio (sample rate, channels, and the length when the file states it), so a page of
HTML or a JSON error is refused with a clear reason before anything plays. Sources: RIFF/WAVE
(Microsoft), the FLAC format (STREAMINFO, RFC 9639 §8.2), ISO/IEC 11172-3 frame headers with
the ID3v2.4 tag header, RFC 3533 Ogg pages, the Vorbis I spec §4.2.2 and RFC 7845 §5.1.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from edgespeak.base.errors import AudioFormatError

MediaFormat = Literal["wav", "flac", "mp3", "vorbis", "opus"]
MAX_SNIFF_BYTES = 1024 * 1024  # an ID3 tag with cover art may come first; past this: not audio

_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


@dataclass(frozen=True)
class MediaInfo:
    """A recognised media stream: ``format``; ``rate_hz`` its sample rate in Hz; ``channels``;
    ``total_frames`` frames per channel when the header states them (WAV with a real data
    size, FLAC with a STREAMINFO total), else None."""

    format: MediaFormat
    rate_hz: int
    channels: int
    total_frames: int | None = None


def sniff(head: bytes) -> MediaInfo | None:
    """The media in a stream starting with ``head``; None when more bytes are needed to tell.

    Raises AudioFormatError saying what the bytes look like when they are not playable audio
    (HTML, JSON, an unknown format, a header with impossible values), or when
    ``MAX_SNIFF_BYTES`` bytes did not tell.
    """
    if len(head) < 4:
        return None
    if head[:4] == b"RIFF":
        return _wav(head)
    if head[:4] == b"fLaC":
        return _flac(head)
    if head[:4] == b"OggS":
        return _ogg(head)
    if head[:3] == b"ID3" or (head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return _mp3(head)
    raise AudioFormatError(f"not audio: {_looks_like(head)}")


def _looks_like(head: bytes) -> str:
    text = head[:64].lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")):
        return "the server sent an HTML page"
    if text.startswith(b"<"):
        return "the server sent XML or HTML"
    if text.startswith((b"{", b"[")):
        return "the server sent JSON"
    return "unknown format (not WAV, FLAC, MP3, Ogg Vorbis or Ogg Opus)"


def _wav(head: bytes) -> MediaInfo | None:
    if len(head) < 12:
        return None
    if head[8:12] != b"WAVE":
        raise AudioFormatError("not audio: a RIFF file that is not WAVE")
    pos, fmt = 12, None
    while len(head) >= pos + 8:
        chunk, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if chunk == b"data":
            if fmt is None:
                raise AudioFormatError("bad WAV: its 'data' chunk comes before 'fmt '")
            rate, channels, block = fmt
            streaming = size in (0, 0xFFFFFFFF)  # not known when written (a pipe, a stream)
            total = None if streaming else size // block
            return MediaInfo("wav", rate, channels, total)
        if chunk == b"fmt ":
            if len(head) < pos + 24:
                return None
            _, channels, rate, _, block, _ = struct.unpack_from("<HHIIHH", head, pos + 8)
            if channels < 1 or rate < 1 or block < 1:
                raise AudioFormatError(f"bad WAV: {channels} channels at {rate} Hz")
            fmt = (rate, channels, block)
        pos += 8 + size + (size & 1)
        if pos > MAX_SNIFF_BYTES:
            break
    if len(head) >= MAX_SNIFF_BYTES:
        raise AudioFormatError(f"not audio: no audio header in the first {MAX_SNIFF_BYTES} bytes")
    return None


def _flac(head: bytes) -> MediaInfo | None:
    if len(head) < 8 + 18:
        return None
    if head[4] & 0x7F != 0:
        raise AudioFormatError("bad FLAC: the first metadata block is not STREAMINFO")
    info = head[8:26]
    rate = (info[10] << 12) | (info[11] << 4) | (info[12] >> 4)
    channels = ((info[12] >> 1) & 0x07) + 1
    total = ((info[13] & 0x0F) << 32) | int.from_bytes(info[14:18], "big")
    if rate == 0:
        raise AudioFormatError("bad FLAC: STREAMINFO has a sample rate of 0")
    return MediaInfo("flac", rate, channels, total or None)


def _ogg(head: bytes) -> MediaInfo | None:
    if len(head) < 27:
        return None
    start = 27 + head[26]  # after the segment table: the first packet
    if len(head) < start + 19:
        return None
    packet = head[start:]
    if packet[:7] == b"\x01vorbis":
        channels, rate = struct.unpack_from("<BI", packet, 11)
        if channels < 1 or rate < 1:
            raise AudioFormatError(f"bad Ogg Vorbis header: {channels} channels at {rate} Hz")
        return MediaInfo("vorbis", rate, channels)
    if packet[:8] == b"OpusHead":
        return MediaInfo("opus", 48000, packet[9])  # Opus decodes at 48 kHz (RFC 7845 §5.1)
    raise AudioFormatError("not audio: an Ogg stream that is neither Vorbis nor Opus")


def _mp3(head: bytes) -> MediaInfo | None:
    pos = 0
    if head[:3] == b"ID3":
        if len(head) < 10:
            return None
        size = 0
        for byte in head[6:10]:  # a "syncsafe" integer: 7 bits per byte
            size = (size << 7) | (byte & 0x7F)
        pos = 10 + size + (10 if head[5] & 0x10 else 0)  # a footer follows when flagged
        if pos + 4 > MAX_SNIFF_BYTES:
            raise AudioFormatError(f"not audio: an ID3 tag of {size} bytes and no MP3 after it")
    if len(head) < pos + 4:
        return None
    b1, b2, b3 = head[pos + 1], head[pos + 2], head[pos + 3]
    version, layer = (b1 >> 3) & 0x03, (b1 >> 1) & 0x03
    bitrate, rate_index = b2 >> 4, (b2 >> 2) & 0x03
    valid = head[pos] == 0xFF and b1 & 0xE0 == 0xE0 and version != 1 and layer != 0
    if not valid or bitrate in (0, 15) or rate_index == 3:
        raise AudioFormatError("not audio: no MPEG audio frame where one should start")
    channels = 1 if b3 >> 6 == 3 else 2
    return MediaInfo("mp3", _MP3_RATES[version][rate_index], channels)
