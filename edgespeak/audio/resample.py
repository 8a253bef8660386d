"""Streaming sample-rate conversion of s16le mono PCM with soxr (state kept across chunks)."""

from __future__ import annotations

import numpy as np
import soxr

from edgespeak.base.pcm import FRAME_BYTES


class Resampler:
    """Bytes of s16le mono PCM at ``in_rate_hz`` Hz in, at ``out_rate_hz`` Hz out.

    Feed whole frames with :meth:`process`, then call :meth:`flush` once for the filter's
    tail. Equal rates pass the bytes through untouched. Raises ValueError for a rate < 1.
    """

    def __init__(self, in_rate_hz: int, out_rate_hz: int) -> None:
        if in_rate_hz < 1 or out_rate_hz < 1:
            raise ValueError(f"sample rates must be >= 1 Hz, not {in_rate_hz} → {out_rate_hz}")
        self.in_rate_hz = in_rate_hz
        self.out_rate_hz = out_rate_hz
        self._stream = (
            soxr.ResampleStream(in_rate_hz, out_rate_hz, 1, dtype="int16")
            if in_rate_hz != out_rate_hz
            else None
        )

    def process(self, pcm: bytes) -> bytes:
        """``pcm`` (whole frames) converted; may return b"" while the filter fills."""
        if self._stream is None or not pcm:
            return pcm
        samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % FRAME_BYTES], dtype="<i2")
        out: bytes = self._stream.resample_chunk(samples, last=False).astype("<i2").tobytes()
        return out

    def flush(self) -> bytes:
        """The converted tail at the end of the stream (b"" for equal rates)."""
        if self._stream is None:
            return b""
        empty = np.zeros(0, dtype="<i2")
        out: bytes = self._stream.resample_chunk(empty, last=True).astype("<i2").tobytes()
        return out
