"""The relay: a group announcement's audio as Opus over MQTT, in sequence-numbered messages.

Wire format (docs/protocols.md §16.4), one MQTT message on ``<prefix>/sync/audio/<key>``:
a 12-byte header ``>IIHH`` (``seq`` from 0, ``granule``: frames of PCM at the speech rate
covered so far, ``flags``, reserved 0) and up to three Opus packets of 20 ms, each preceded
by its length (``>H``). Flag ``END`` marks the last message; its ``granule`` is the phrase's
total frame count, so a receiver trims the encoder's padding and knows it got everything.
Flag ``ABORT`` (with ``END``) says the sender gave up (its synthesis failed, it was stopped):
play what came, cache nothing.

Opus (RFC 6716) runs at the speech rate when that is one of its rates (8, 12, 16, 24 or
48 kHz), else at 48 kHz with the PCM resampled on both sides; mono, 24 kbit/s, libopus
through opuslib_next as :mod:`edgespeak.audio.opus` uses it. The decoder drops the encoder's
lookahead (the pre-skip of RFC 7845 §4.2) so decoded audio lines up with the input frame for
frame: every node decoding the same messages gets the same bytes.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

import numpy as np
import opuslib_next
import soxr

from edgespeak.base.errors import AudioFormatError
from edgespeak.base.pcm import FRAME_BYTES

HEADER = struct.Struct(">IIHH")  # seq, granule (frames so far), flags, reserved
END = 0x0001
ABORT = 0x0002
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
BITRATE_BPS = 24000
PACKETS_PER_MESSAGE = 3  # 60 ms per MQTT message
_MAX_PACKET = 1275  # RFC 6716 §3.2.1: the longest Opus packet, bytes
_MAX_FRAME_S = 0.12  # the longest Opus frame


class RelayError(AudioFormatError):
    """A relay message that cannot be used: malformed, out of sequence, corrupt Opus."""


@dataclass(frozen=True)
class Message:
    """One relay message, parsed. ``packets``: Opus packets of 20 ms each; ``aborted``: the
    sender gave up (``end`` is then True too)."""

    seq: int
    granule: int
    end: bool
    packets: tuple[bytes, ...]
    aborted: bool = False

    def to_bytes(self) -> bytes:
        """The message on the wire."""
        flags = (END if self.end else 0) | (ABORT if self.aborted else 0)
        out = bytearray(HEADER.pack(self.seq, self.granule, flags, 0))
        for packet in self.packets:
            out += struct.pack(">H", len(packet)) + packet
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> Message:
        """Parse a relay message. Raises RelayError when it is malformed."""
        if len(data) < HEADER.size:
            raise RelayError(f"relay message of {len(data)} bytes, shorter than its header")
        seq, granule, flags, _ = HEADER.unpack_from(data)
        packets: list[bytes] = []
        at = HEADER.size
        while at < len(data):
            if at + 2 > len(data):
                raise RelayError("relay message ends inside a packet length")
            (size,) = struct.unpack_from(">H", data, at)
            if not 0 < size <= _MAX_PACKET or at + 2 + size > len(data):
                raise RelayError(f"relay message has a bad packet length {size}")
            packets.append(data[at + 2 : at + 2 + size])
            at += 2 + size
        aborted = bool(flags & ABORT)
        return cls(seq, granule, bool(flags & END) or aborted, tuple(packets), aborted)


def opus_rate(rate_hz: int) -> int:
    """The rate Opus runs at for speech at ``rate_hz`` Hz: itself if Opus has it, else 48000."""
    return rate_hz if rate_hz in OPUS_RATES else 48000


@functools.cache
def lookahead(rate_hz: int) -> int:
    """The encoder's lookahead in samples at Opus rate ``rate_hz`` (what the decoder drops)."""
    return int(opuslib_next.Encoder(rate_hz, 1, opuslib_next.APPLICATION_AUDIO).lookahead)


class _Resampler:
    """Streaming conversion of s16le mono PCM from ``in_hz`` to ``out_hz`` that gives the same
    bytes for the same input on every node: soxr on float32, rounded here. (soxr's own int16
    output differs from run to run for small chunks, which would break "every node plays the
    same bytes".) Equal rates pass through."""

    def __init__(self, in_hz: int, out_hz: int) -> None:
        self._stream = (
            soxr.ResampleStream(in_hz, out_hz, 1, dtype="float32") if in_hz != out_hz else None
        )

    def process(self, pcm: bytes, *, last: bool = False) -> bytes:
        """``pcm`` (whole frames) converted; ``last``: the input ends here (flush)."""
        if self._stream is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        out = self._stream.resample_chunk(samples, last=last)
        converted: bytes = np.clip(np.rint(out), -32768, 32767).astype("<i2").tobytes()
        return converted


class RelayEncoder:
    """Bytes of s16le mono PCM at ``rate_hz`` Hz in, relay messages (bytes) out.

    Call :meth:`feed` any number of times, then :meth:`finish` once (its last message has
    ``END``). Raises ValueError for ``rate_hz`` outside 8000..384000.
    """

    def __init__(self, rate_hz: int, *, bitrate_bps: int = BITRATE_BPS) -> None:
        if not 8000 <= rate_hz <= 384000:
            raise ValueError(f"relay rate must be 8000..384000 Hz, not {rate_hz}")
        self.rate_hz = rate_hz
        self._opus_hz = opus_rate(rate_hz)
        self._frame = self._opus_hz // 50  # 20 ms
        self._encoder = opuslib_next.Encoder(self._opus_hz, 1, opuslib_next.APPLICATION_AUDIO)
        self._encoder.bitrate = bitrate_bps
        self._resampler = _Resampler(rate_hz, self._opus_hz)
        self._buf = bytearray()  # PCM at the Opus rate, not yet a whole frame
        self._carry = b""  # half a sample of input
        self._packets: list[bytes] = []
        self._encoded = 0  # samples at the Opus rate encoded so far
        self._fed = 0  # frames at the speech rate fed so far
        self._seq = 0
        self._finished = False

    def feed(self, pcm: bytes) -> list[bytes]:
        """Encode ``pcm``; returns the messages now complete (three 20 ms packets each).
        Raises RuntimeError after :meth:`finish`."""
        if self._finished:
            raise RuntimeError("RelayEncoder.feed() after finish()")
        data = self._carry + pcm
        whole = len(data) - len(data) % FRAME_BYTES
        self._carry = data[whole:]
        self._fed += whole // FRAME_BYTES
        self._buf += self._resampler.process(data[:whole])
        self._encode_whole()
        return self._messages(final=False)

    def finish(self) -> list[bytes]:
        """Encode the rest, zero-padded so the lookahead is flushed too; returns the last
        messages, the final one flagged ``END`` with the total frame count. Raises
        RuntimeError when called twice."""
        if self._finished:
            raise RuntimeError("RelayEncoder.finish() called twice")
        self._finished = True
        self._buf += self._resampler.process(b"", last=True)
        total = self._encoded + len(self._buf) // FRAME_BYTES
        needed = -(-(total + lookahead(self._opus_hz)) // self._frame) * self._frame
        self._buf += bytes((needed - total) * FRAME_BYTES)
        self._encode_whole()
        return self._messages(final=True)

    def abort(self) -> bytes:
        """The message that ends the relay early (``ABORT``): nothing more is encoded."""
        self._finished = True
        message = Message(self._seq, self._fed, True, (), aborted=True).to_bytes()
        self._seq += 1
        return message

    def _encode_whole(self) -> None:
        size = self._frame * FRAME_BYTES
        while len(self._buf) >= size:
            frame = bytes(self._buf[:size])
            del self._buf[:size]
            self._packets.append(bytes(self._encoder.encode(frame, self._frame)))
            self._encoded += self._frame

    def _granule(self) -> int:
        """Speech-rate frames the packets so far carry (never more than were fed)."""
        return min(self._fed, self._encoded * self.rate_hz // self._opus_hz)

    def _messages(self, *, final: bool) -> list[bytes]:
        out: list[bytes] = []
        while len(self._packets) >= PACKETS_PER_MESSAGE or (final and self._packets):
            batch = self._packets[:PACKETS_PER_MESSAGE]
            del self._packets[:PACKETS_PER_MESSAGE]
            last = final and not self._packets
            granule = self._fed if last else self._granule()
            out.append(Message(self._seq, granule, last, tuple(batch)).to_bytes())
            self._seq += 1
        if final and not out:  # nothing left to carry: an empty END
            out.append(Message(self._seq, self._fed, True, ()).to_bytes())
            self._seq += 1
        return out


class RelayDecoder:
    """Relay messages in order, bytes of s16le mono PCM at ``rate_hz`` Hz out.

    The output is exactly the input of the :class:`RelayEncoder` run through Opus: the
    lookahead dropped, the end trimmed (or zero-filled) to the END message's frame count.
    ``frames``: PCM frames returned so far; ``ended``: the END message was decoded;
    ``aborted``: it said the sender gave up (then the end is not trimmed: what came plays).
    """

    def __init__(self, rate_hz: int) -> None:
        self.rate_hz = rate_hz
        self._opus_hz = opus_rate(rate_hz)
        self._decoder = opuslib_next.Decoder(self._opus_hz, 1)
        self._resampler = _Resampler(self._opus_hz, rate_hz)
        self._skip = lookahead(self._opus_hz)  # Opus-rate samples still to drop
        self._held = bytearray()  # decoded speech-rate PCM beyond the granule so far
        self.next_seq = 0
        self.frames = 0
        self.ended = False
        self.aborted = False

    def feed(self, data: bytes) -> bytes:
        """Decode one relay message; returns the PCM it completes (maybe b"").

        Raises RelayError for a malformed message, one out of sequence (``seq`` must be
        :attr:`next_seq`), one after END, or a corrupt Opus packet.
        """
        msg = Message.from_bytes(data)
        if self.ended:
            raise RelayError(f"relay message {msg.seq} after the END")
        if msg.seq != self.next_seq:
            raise RelayError(f"relay message {msg.seq} where {self.next_seq} was due")
        self.next_seq += 1
        pcm = bytearray()
        for packet in msg.packets:
            try:
                pcm += self._decoder.decode(packet, int(self._opus_hz * _MAX_FRAME_S))
            except opuslib_next.OpusError as exc:
                raise RelayError(f"corrupt Opus packet in relay message {msg.seq}: {exc}") from exc
        drop = min(self._skip, len(pcm) // FRAME_BYTES)
        self._skip -= drop
        self._held += self._resampler.process(bytes(pcm[drop * FRAME_BYTES :]))
        if msg.aborted:
            self.ended = self.aborted = True
            self._held += self._resampler.process(b"", last=True)
            return self._release(self.frames + self._frames_held())
        if msg.end:
            self.ended = True
            self._held += self._resampler.process(b"", last=True)
            self._held += bytes(
                max(0, msg.granule - self.frames - self._frames_held()) * FRAME_BYTES
            )
        return self._release(msg.granule)

    def _frames_held(self) -> int:
        return len(self._held) // FRAME_BYTES

    def _release(self, granule: int) -> bytes:
        n = max(0, min(self._frames_held(), granule - self.frames))
        out = bytes(self._held[: n * FRAME_BYTES])
        del self._held[: n * FRAME_BYTES]
        self.frames += n
        if self.ended:
            self._held.clear()
        return out
