"""What a recording says, by an offline recogniser: pocketsphinx 5.1.1 and its bundled US
English model (the test extra). Piper's audio differs from run to run, so tests check the words
it speaks rather than its bytes; the recogniser makes near-misses ("someone is that the front
door"), so tests look for key words."""

from __future__ import annotations

import numpy as np
import pocketsphinx
import soxr

ASR_RATE_HZ = 16000  # the bundled model's rate


def words(pcm: bytes, rate_hz: int) -> str:
    """The recognised text (lower case) of ``pcm``: bytes of s16le mono PCM at ``rate_hz``."""
    samples = np.frombuffer(pcm, dtype="<i2")
    if rate_hz != ASR_RATE_HZ:
        samples = soxr.resample(samples, rate_hz, ASR_RATE_HZ).astype("<i2")
    decoder = pocketsphinx.Decoder(samprate=ASR_RATE_HZ, loglevel="FATAL")
    decoder.start_utt()
    decoder.process_raw(samples.tobytes(), full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return "" if hyp is None else str(hyp.hypstr).lower()


def heard(pcm: bytes, rate_hz: int, *keys: str) -> str:
    """The recognised text; AssertionError naming it unless every key word is in it."""
    text = words(pcm, rate_hz)
    missing = [k for k in keys if k not in text]
    assert not missing, f"heard {text!r}, missing {missing}"
    return text
