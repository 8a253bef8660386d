"""Engine PCM → the wire format a session asked for (``pcm``, ``wav``, ``opus``).

One :class:`OutputStream` per session: it resamples with soxr (streaming, state kept across
chunks so segment joins are seamless) and encodes. Opus is Ogg Opus at 48000 Hz only, as Fish
documents (docs/protocols.md §4).
"""

from __future__ import annotations

import numpy as np
import soxr

from edgespeak.audio.opus import OPUS_RATE_HZ, OggOpusEncoder
from edgespeak.base.errors import RequestError
from edgespeak.base.pcm import wav_header
from edgespeak.wire import fish as fp

FORMATS = ("pcm", "wav", "opus")
DEFAULT_RATE_HZ = 44100  # Fish: sample_rate null → 44100
# What this server uses for opus_bitrate -1000 ("auto"). A local server's link is loopback or
# LAN, where bandwidth is free, so auto means near-transparent: measured on espeak-ng speech,
# libopus reaches 32-34 dB waveform SNR at 256 kbps but only ~20 dB at 64 kbps (below 64 kbps
# it switches to SILK/hybrid modes that do not follow the waveform). An explicit bitrate is
# honoured as asked.
AUTO_OPUS_BPS = 256_000


class UnsupportedRequest(RequestError):
    """The request asks for something this server cannot produce (format, rate, bitrate)."""


def opus_bitrate_bps(value: object) -> int | None:
    """Fish ``opus_bitrate`` in either convention → bits/s, or None for auto (-1000); see
    :func:`edgespeak.wire.fish.opus_bitrate_bps`. Raises UnsupportedRequest."""
    try:
        return fp.opus_bitrate_bps(value)
    except ValueError as exc:
        raise UnsupportedRequest(str(exc)) from None


class OutputStream:
    """Resample and encode one session's audio.

    ``in_rate_hz``: the engine's rate. Input: bytes of s16le mono PCM at that rate.
    Output of :meth:`write`/:meth:`close`: wire bytes of ``format`` at :attr:`rate_hz`.
    ``gain_db``: gain applied first (Fish ``prosody.volume``), clipped to 16 bits.
    Raises UnsupportedRequest for an unknown format, a bad rate or bitrate.
    """

    def __init__(
        self,
        format: str,
        sample_rate: object,
        in_rate_hz: int,
        opus_bitrate: object = -1000,
        *,
        gain_db: float = 0.0,
    ) -> None:
        if format not in FORMATS:
            raise UnsupportedRequest(
                f"format {format!r} is not supported by this server; use one of {FORMATS}"
            )
        if format == "opus":
            rate = OPUS_RATE_HZ
            self._opus: OggOpusEncoder | None = OggOpusEncoder(
                bitrate_bps=opus_bitrate_bps(opus_bitrate) or AUTO_OPUS_BPS
            )
            header = self._opus.header()
        else:
            self._opus = None
            if sample_rate is None:
                rate = DEFAULT_RATE_HZ
            elif isinstance(sample_rate, int) and 8000 <= sample_rate <= 192000:
                rate = sample_rate
            else:
                raise UnsupportedRequest(f"sample_rate {sample_rate!r} is not 8000..192000 Hz")
            header = wav_header(rate) if format == "wav" else b""
        self._gain = 10 ** (gain_db / 20) if gain_db else None
        self._pending_header = header  # sent in front of the first bytes out
        self.format = format
        self.rate_hz = rate
        self._resampler = (
            soxr.ResampleStream(in_rate_hz, rate, 1, dtype="int16") if rate != in_rate_hz else None
        )

    def _header(self) -> bytes:
        header, self._pending_header = self._pending_header, b""
        return header

    def _encode(self, pcm: bytes) -> bytes:
        return self._opus.encode(pcm) if self._opus is not None else pcm

    def write(self, pcm: bytes) -> bytes:
        """Encode bytes of s16le mono PCM at the engine rate; may return b"" while buffering."""
        if self._gain is not None:
            louder = np.frombuffer(pcm, dtype="<i2").astype(np.float32) * self._gain
            pcm = np.clip(np.rint(louder), -32768, 32767).astype("<i2").tobytes()
        if self._resampler is not None:
            samples = np.frombuffer(pcm, dtype="<i2")
            pcm = self._resampler.resample_chunk(samples, last=False).astype("<i2").tobytes()
        return self._header() + self._encode(pcm)

    def close(self) -> bytes:
        """Flush the resampler and encoder; the returned bytes end the stream."""
        tail = b""
        if self._resampler is not None:
            empty = np.zeros(0, dtype="<i2")
            tail = self._resampler.resample_chunk(empty, last=True).astype("<i2").tobytes()
        out = self._header() + self._encode(tail)
        if self._opus is not None:
            out += self._opus.finish()
        return out
