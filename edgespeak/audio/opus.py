"""Ogg Opus (RFC 7845) streaming decoder and encoder, mono, on top of libopus via opuslib_next.

Granule positions (RFC 7845 §4) count 48 kHz samples of decoded output, including the
``pre_skip`` samples at the start that a decoder discards (§4.2). The end-of-stream page's
granule position tells a decoder where to cut the end (§4.4): total playable output is
``final_granule - pre_skip`` samples.
"""

from __future__ import annotations

import ctypes
import secrets
import struct

import opuslib_next
from opuslib_next.api import decoder as opus_api

from edgespeak.audio import dsp
from edgespeak.audio.ogg import OggPacket, OggPacketReader, OggPageWriter
from edgespeak.base.errors import AudioFormatError
from edgespeak.base.pcm import FRAME_BYTES

__all__ = ["OPUS_RATE_HZ", "OggOpusDecoder", "OggOpusEncoder"]

OPUS_RATE_HZ = 48000
_MAX_FRAME = 5760  # 120 ms at 48 kHz, the longest Opus packet (RFC 6716 §3.2.5)
_FRAME = 960  # 20 ms at 48 kHz
_HEAD = struct.Struct("<8sBBHIhB")  # RFC 7845 §5.1, 19 bytes for mapping family 0
_VENDOR = b"edgespeak"


class OggOpusDecoder:
    """Feed Ogg Opus bytes as they arrive, get bytes of s16le mono PCM at 48000 Hz.

    Follows RFC 7845: OpusHead (§5.1; version major 0, channel count, pre-skip, output gain
    which is applied), OpusTags (§5.2, skipped), pre-skip removal (§4.2) and end trimming from
    the end-of-stream page's granule position (§4.4), so the total output is exactly
    ``final_granule - pre_skip`` samples. Streams must start at the beginning (a non-zero
    starting granule offset, §4.5, is not trimmed).
    """

    rate_hz: int = OPUS_RATE_HZ  # sample rate of the output, Hz (Opus always decodes at 48k here)

    def __init__(self) -> None:
        self._reader = OggPacketReader()
        self._decoder: opuslib_next.Decoder | None = None
        self._pcm = (ctypes.c_int16 * _MAX_FRAME)()  # libopus decodes into this, every packet
        self._have_tags = False
        self._pre_skip = 0
        self._gain = 1.0
        self._decoded = 0  # 48 kHz samples decoded so far, counting pre-skip
        self._eos_held: list[bytes] = []  # packets of the EOS page before its last one
        self._done = False

    def feed(self, data: bytes) -> bytes:
        """Consume Ogg Opus bytes (any split); return the s16le mono 48 kHz PCM now decodable.

        Raises AudioFormatError for a bad Ogg page, a missing or malformed OpusHead/OpusTags,
        a channel count other than 1 (only mono is played), an unsupported mapping family, an
        empty or corrupt Opus packet (wrapping opuslib_next.OpusError), or an end-of-stream
        page without a granule position.
        """
        out = bytearray()
        for packet in self._reader.feed(data):
            out += self._packet(packet)
        if self._reader.eos_seen and not self._done:  # the EOS page's packets came in this call
            raise AudioFormatError("Ogg Opus end-of-stream page has no granule position")
        return bytes(out)

    def finish(self) -> bytes:
        """Declare the input over; return b"" (all output was already returned by feed).

        Raises AudioFormatError if the stream ended inside a page or packet, or before the
        OpusHead and OpusTags headers were complete. A stream cut at a page boundary without
        an end-of-stream page is accepted (no end trimming is possible then).
        """
        self._reader.finish()
        if not self._have_tags:
            raise AudioFormatError("Ogg Opus stream ended before its OpusHead/OpusTags headers")
        return b""

    def _packet(self, packet: OggPacket) -> bytes:
        if self._decoder is None:
            self._parse_head(packet)
            return b""
        if not self._have_tags:
            if not packet.data.startswith(b"OpusTags"):
                raise AudioFormatError("second Ogg Opus packet is not OpusTags (RFC 7845 §5.2)")
            self._have_tags = True
            return b""
        if self._done:
            raise AudioFormatError("Ogg Opus packet after the end-of-stream packet")
        if packet.eos and packet.granule_position is None:
            self._eos_held.append(packet.data)  # trim once the page's granule is known
            return b""
        if not packet.eos:
            return self._emit(self._decode(packet.data), None)
        self._done = True
        end = packet.granule_position
        assert end is not None
        pcm = b"".join(self._decode(p) for p in [*self._eos_held, packet.data])
        self._eos_held.clear()
        if end < self._decoded - len(pcm) // FRAME_BYTES:
            raise AudioFormatError(
                f"end-of-stream granule position {end} lies before the last page's audio"
            )
        return self._emit(pcm, end)

    def _parse_head(self, packet: OggPacket) -> None:
        data = packet.data
        if not data.startswith(b"OpusHead"):
            raise AudioFormatError("first Ogg packet is not an OpusHead (RFC 7845 §5.1)")
        if len(data) < _HEAD.size:
            raise AudioFormatError(f"OpusHead too short: {len(data)} bytes, need 19")
        if not packet.bos or packet.granule_position is None:
            raise AudioFormatError("OpusHead must be alone on the first Ogg page (RFC 7845 §3)")
        _, version, channels, pre_skip, _rate, gain_q8, family = _HEAD.unpack_from(data)
        if version >> 4 != 0:
            raise AudioFormatError(f"unsupported OpusHead version {version} (major must be 0)")
        if channels != 1:
            raise AudioFormatError(
                f"Ogg Opus stream has {channels} channels; only mono (1 channel) is supported"
            )
        if family != 0:
            raise AudioFormatError(f"unsupported Opus channel mapping family {family} (need 0)")
        self._pre_skip = pre_skip
        self._gain = 10.0 ** (gain_q8 / (20.0 * 256.0))  # Q7.8 dB, RFC 7845 §5.1
        self._decoder = opuslib_next.Decoder(OPUS_RATE_HZ, 1)

    def _decode(self, data: bytes) -> bytes:
        if not data:
            raise AudioFormatError("empty Opus packet (RFC 6716 §3.4: at least one byte)")
        assert self._decoder is not None
        # libopus itself, into the one buffer: opuslib_next's decode() allocates 11.5 KB per
        # packet in a ctypes reference cycle, garbage that waits for the cyclic collector.
        state = self._decoder.decoder_state
        samples = opus_api.libopus_decode(state, data, len(data), self._pcm, _MAX_FRAME, 0)
        if samples < 0:
            exc = opuslib_next.OpusError(samples)
            raise AudioFormatError(f"corrupt Opus packet: {exc}") from exc
        pcm = ctypes.string_at(self._pcm, samples * FRAME_BYTES)
        self._decoded += len(pcm) // FRAME_BYTES
        return pcm

    def _emit(self, pcm: bytes, end: int | None) -> bytes:
        """Cut ``pcm`` (the samples just before ``self._decoded``) to [pre_skip, end)."""
        first = self._decoded - len(pcm) // FRAME_BYTES
        lo = max(self._pre_skip - first, 0)
        hi = len(pcm) // FRAME_BYTES if end is None else max(end - first, 0)
        pcm = pcm[lo * FRAME_BYTES : hi * FRAME_BYTES]
        if self._gain != 1.0 and pcm:
            pcm = dsp.shape(pcm, self._gain)  # the header's output gain, clipped to s16
        return pcm


class OggOpusEncoder:
    """Streaming encoder for a server: s16le mono PCM at 48000 Hz in, Ogg Opus pages out.

    20 ms frames (960 samples at 48 kHz), one audio packet per page for low latency. OpusHead
    carries pre-skip = the encoder's lookahead (RFC 7845 §4.2, §5.1). Page granule positions
    are the decoded-output sample count through the page's packet, counting pre-skip (§4):
    960 * packets for ordinary pages, and pre_skip + total input samples on the final page so
    a correct decoder returns exactly as many samples as were fed (§4.4).
    Call header() once, then encode() any number of times, then finish() once.
    """

    def __init__(self, *, bitrate_bps: int | None = None, serial: int | None = None) -> None:
        """``bitrate_bps``: target bits per second (500 .. 512000), None for libopus' automatic
        choice; ValueError outside that range. ``serial``: Ogg serial number (32 bits), random
        if None.
        """
        if bitrate_bps is not None and not 500 <= bitrate_bps <= 512000:
            raise ValueError(f"Opus bitrate must be 500 .. 512000 bps, got {bitrate_bps}")
        self._encoder = opuslib_next.Encoder(OPUS_RATE_HZ, 1, opuslib_next.APPLICATION_AUDIO)
        if bitrate_bps is not None:
            self._encoder.bitrate = bitrate_bps
        self.pre_skip: int = int(self._encoder.lookahead)
        self._writer = OggPageWriter(secrets.randbits(32) if serial is None else serial)
        self._buf = bytearray()
        self._packets = 0
        self._state = "new"  # -> "open" (header written) -> "finished"

    def header(self) -> bytes:
        """Return the two header pages: the BOS page with OpusHead and the OpusTags page.

        OpusHead (RFC 7845 §5.1): version 1, 1 channel, pre-skip, input rate 48000, gain 0,
        mapping family 0. OpusTags (§5.2): vendor "edgespeak", no comments. Both granule 0.
        Raises RuntimeError if called twice.
        """
        if self._state != "new":
            raise RuntimeError("OggOpusEncoder.header() was already called")
        self._state = "open"
        head = _HEAD.pack(b"OpusHead", 1, 1, self.pre_skip, OPUS_RATE_HZ, 0, 0)
        tags = b"OpusTags" + struct.pack("<I", len(_VENDOR)) + _VENDOR + struct.pack("<I", 0)
        return self._writer.page([head], 0, bos=True) + self._writer.page([tags], 0)

    def encode(self, pcm: bytes) -> bytes:
        """Buffer ``pcm`` (bytes of s16le mono PCM at 48000 Hz, any length, odd too).

        Returns the Ogg pages (possibly b"") for every complete 20 ms frame buffered so far.
        Raises RuntimeError before header() or after finish().
        """
        self._check_open()
        self._buf += pcm
        return self._drain(eos_granule=None)

    def finish(self) -> bytes:
        """Flush: zero-pad so every input sample plus the lookahead is encoded; return pages.

        The last page has the EOS flag and granule pre_skip + total input samples (RFC 7845
        §4.4). A trailing odd byte (half a sample) is discarded. Raises RuntimeError before
        header() or after finish().
        """
        self._check_open()
        self._state = "finished"
        if len(self._buf) % FRAME_BYTES:
            del self._buf[-1]
        total = self._packets * _FRAME + len(self._buf) // FRAME_BYTES
        needed = -(-(total + self.pre_skip) // _FRAME) * _FRAME  # round up to whole frames
        self._buf += bytes((needed - total) * FRAME_BYTES)
        return self._drain(eos_granule=self.pre_skip + total)

    def _check_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"OggOpusEncoder is {self._state}; call header() first, once")

    def _drain(self, eos_granule: int | None) -> bytes:
        frame_bytes = _FRAME * FRAME_BYTES
        count = len(self._buf) // frame_bytes
        pages = bytearray()
        for i in range(count):
            frame = bytes(self._buf[i * frame_bytes : (i + 1) * frame_bytes])
            packet = bytes(self._encoder.encode(frame, _FRAME))
            self._packets += 1
            last = eos_granule is not None and i == count - 1
            granule = eos_granule if last and eos_granule is not None else self._packets * _FRAME
            pages += self._writer.page([packet], granule, eos=last)
        del self._buf[: count * frame_bytes]
        return bytes(pages)
