"""Generate edgespeak's built-in doorbell chime: ``edgespeak/sounds/doorbell.wav``.

A two-note "ding-dong" (E5 then C#5, a major third down) made of a few bell-like partials
with exponential decay, 22050 Hz mono s16 (the default speech rate, so it plays without
resampling), peaking at -6 dBFS, starting and ending on silence. Deterministic: running it
again gives the same bytes. Run: ``.venv/bin/python scripts/make_doorbell.py``.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

RATE_HZ = 22050
OUT = Path(__file__).resolve().parent.parent / "edgespeak" / "sounds" / "doorbell.wav"
# (frequency ratio to the fundamental, relative amplitude, decay time constant in s)
PARTIALS = ((1.0, 1.0, 0.45), (2.0, 0.35, 0.25), (3.0, 0.12, 0.15), (4.2, 0.05, 0.08))


def note(freq_hz: float, length_s: float) -> np.ndarray:
    t = np.arange(round(length_s * RATE_HZ)) / RATE_HZ
    tone = sum(a * np.exp(-t / tau) * np.sin(2 * np.pi * freq_hz * r * t) for r, a, tau in PARTIALS)
    attack = np.minimum(1.0, t / 0.004)  # 4 ms attack: no click at the strike
    return np.asarray(tone * attack)


def doorbell() -> np.ndarray:
    """Samples in [-0.5, 0.5]: ding at 0 s, dong at 0.5 s, 1.5 s in all."""
    out = np.zeros(round(1.5 * RATE_HZ))
    ding, dong = note(659.26, 1.0), note(554.37, 1.0)
    out[: len(ding)] += ding
    start = round(0.5 * RATE_HZ)
    out[start : start + len(dong)] += dong
    tail = round(0.05 * RATE_HZ)  # the last 50 ms fade to exact silence
    out[-tail:] *= np.linspace(1.0, 0.0, tail)
    return out / np.max(np.abs(out)) * 0.5


def main() -> None:
    pcm = np.rint(doorbell() * 32767).astype("<i2").tobytes()
    with wave.open(str(OUT), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE_HZ)
        wav.writeframes(pcm)
    print(f"wrote {OUT} ({len(pcm) // 2} frames at {RATE_HZ} Hz)")


if __name__ == "__main__":
    main()
