"""Pure sample arithmetic for the ALSA sink: fade envelopes and gain on s16le mono PCM.

Everything here takes and returns ``bytes`` of little-endian signed 16-bit samples (one sample
per frame) and is independent of ALSA. Gains are linear amplitude factors (``0.5`` is -6.02 dB,
``20·log10(gain)`` dB); results are rounded to the nearest integer and clipped to the s16 range.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

S16 = np.dtype("<i2")
S16_MIN = -32768
S16_MAX = 32767
Envelope = NDArray[np.float64]


def fade_in(frames: int) -> Envelope:
    """A raised-cosine fade-in over ``frames`` frames: ``0.5 - 0.5·cos(π·i/frames)``.

    Starts at exactly 0 and rises monotonically towards 1 (never reaching it), so the first
    faded sample is silent and there is no step at the start.
    """
    if frames < 0:
        raise ValueError(f"fade length must be >= 0 frames, got {frames}")
    return 0.5 - 0.5 * np.cos(np.pi * np.arange(frames, dtype=np.float64) / max(frames, 1))


def fade_out(frames: int) -> Envelope:
    """The fade-in reversed: falls monotonically from near 1 to exactly 0 at the last frame."""
    return fade_in(frames)[::-1].copy()


def samples(pcm: bytes) -> NDArray[np.int16]:
    """The s16le samples of ``pcm`` (a read-only view, no copy)."""
    return np.frombuffer(pcm, dtype=S16)


def to_s16(values: NDArray[np.floating[Any]]) -> bytes:
    """Round to nearest, clip to [-32768, 32767] and pack as s16le."""
    packed: bytes = np.clip(np.rint(values), S16_MIN, S16_MAX).astype(S16).tobytes()
    return packed


def shape(
    pcm: bytes, gain: float = 1.0, envelope: Envelope | None = None, *, at_end: bool = False
) -> bytes:
    """``pcm`` times ``gain``, with ``envelope`` multiplied into its first (or, ``at_end``, its
    last) ``len(envelope)`` samples.

    The envelope may not be longer than ``pcm``. With ``gain == 1.0`` and no envelope the input
    object itself is returned (byte-exact fast path); with ``gain == 1.0`` and an envelope only
    the enveloped samples are recomputed, the rest stays byte-identical.
    """
    n = len(envelope) if envelope is not None else 0
    count = len(pcm) // 2
    if n > count:
        raise ValueError(f"envelope of {n} frames is longer than the {count} frames it shapes")
    if envelope is None or n == 0:
        return pcm if gain == 1.0 else to_s16(samples(pcm) * gain)
    cut = (count - n) * 2 if at_end else n * 2
    if gain == 1.0:  # only the enveloped part changes
        if at_end:
            return pcm[:cut] + to_s16(samples(pcm[cut:]) * envelope)
        return to_s16(samples(pcm[:cut]) * envelope) + pcm[cut:]
    values = samples(pcm) * gain
    if at_end:
        values[count - n :] *= envelope
    else:
        values[:n] *= envelope
    return to_s16(values)


def hold(pcm: bytes, frames: int, last: int = 0) -> bytes:
    """``pcm`` cut or padded to exactly ``frames`` frames, padding by repeating its last sample
    (or ``last`` when ``pcm`` is empty) — material for a fade-out that must last ``frames``."""
    pcm = pcm[: frames * 2]
    missing = frames - len(pcm) // 2
    if missing <= 0:
        return pcm
    value = int(samples(pcm[-2:])[0]) if pcm else last
    return pcm + np.full(missing, value, dtype=S16).tobytes()


def last_sample(pcm: bytes | memoryview, default: int = 0) -> int:
    """The value of the last s16le sample of ``pcm``, or ``default`` when it is empty."""
    if len(pcm) < 2:
        return default
    return int.from_bytes(bytes(pcm[-2:]), "little", signed=True)
