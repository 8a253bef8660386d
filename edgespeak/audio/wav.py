"""Whole WAV files → s16le mono PCM at a chosen rate (chimes, Hermes ``playBytes``).

Reads PCM WAV with 8-, 16-, 24- or 32-bit integer samples and any channel count (channels are
averaged to mono) using the standard library's :mod:`wave`, and resamples with soxr when the
caller asks for another rate. Streamed TTS audio does not come through here
(see :mod:`edgespeak.audio.formats`).

A 16-bit mono file at the rate asked for (the built-in chime at the default rate) is used as it
is; numpy and soxr (~15 MiB of RSS once imported) are imported only for a file that needs
converting or resampling.
"""

from __future__ import annotations

import io
import wave
from typing import TYPE_CHECKING, Any

from edgespeak.base.errors import AudioFormatError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

MAX_WAV_BYTES = 16 * 1024 * 1024  # ~3 min of 48 kHz stereo s16: longer is not a chime


def read_wav(data: bytes, *, rate_hz: int | None = None) -> tuple[bytes, int]:
    """Decode a whole WAV file.

    Returns ``(pcm, rate)``: bytes of s16le mono PCM at ``rate`` Hz, ``rate`` being ``rate_hz``
    when given (resampled with soxr) else the file's own rate.
    Raises AudioFormatError for a file that is not PCM WAV, is truncated, is empty or is larger
    than ``MAX_WAV_BYTES``.
    """
    if len(data) > MAX_WAV_BYTES:
        raise AudioFormatError(f"WAV is {len(data)} bytes, more than {MAX_WAV_BYTES}")
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            channels, width, rate, count = (
                wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()
            )  # fmt: skip
            frames = wav.readframes(count)
    except (wave.Error, EOFError, ValueError) as exc:
        raise AudioFormatError(f"not a PCM WAV file: {exc}") from exc
    if width not in (1, 2, 3, 4) or channels < 1 or rate <= 0:
        raise AudioFormatError(f"unsupported WAV: {channels} channels, {width * 8}-bit, {rate} Hz")
    usable = len(frames) - len(frames) % (width * channels)
    if usable == 0:
        raise AudioFormatError("WAV holds no audio frames")
    resample = rate_hz is not None and rate_hz != rate
    if width == 2 and channels == 1 and not resample:
        return frames[:usable], rate  # already s16le mono: what the conversion would give
    return _converted(frames[:usable], width, channels, rate, rate_hz if resample else None)


def _converted(
    frames: bytes, width: int, channels: int, rate: int, rate_hz: int | None
) -> tuple[bytes, int]:
    """Interleaved integer samples at ``rate`` Hz → s16le mono, resampled to ``rate_hz`` Hz
    when given (numpy and soxr imported here, on first use)."""
    import soxr

    mono = to_float_mono(frames, width, channels)
    if rate_hz is not None:
        mono = soxr.resample(mono, rate, rate_hz)
        rate = rate_hz
    return to_s16(mono * 32768.0), rate


def to_s16(values: NDArray[np.floating[Any]]) -> bytes:
    """Round to nearest (halves to even), clip to [-32768, 32767] and pack as s16le."""
    import numpy as np

    packed: bytes = np.clip(np.rint(values), -32768, 32767).astype("<i2").tobytes()
    return packed


def to_float_mono(frames: bytes, width: int, channels: int) -> NDArray[np.float64]:
    """Interleaved integer samples → mono floats in [-1, 1)."""
    import numpy as np

    if width == 1:  # WAV 8-bit is unsigned
        values = np.frombuffer(frames, dtype=np.uint8).astype(np.float64) - 128.0
    elif width == 3:  # 24-bit little-endian: widen to 32 bits, keep the sign
        raw = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 3)
        padded = np.zeros((len(raw), 4), dtype=np.uint8)
        padded[:, 1:] = raw
        values = padded.view("<i4").reshape(-1).astype(np.float64) / 256.0
    else:
        values = np.frombuffer(frames, dtype=f"<i{width}").astype(np.float64)
    scale = float(2 ** (8 * width - 1))
    mono: NDArray[np.float64] = values.reshape(-1, channels).mean(axis=1) / scale
    return mono
