"""What a recording says, by an offline recogniser: pocketsphinx 5.1.1 and its bundled US
English model (the test extra). Piper's audio differs from run to run, so tests check the words
it speaks rather than its bytes; the recogniser makes near-misses ("someone is that the front
door", once "someone is that the frog or"), so tests ask for most of the words, not all."""

from __future__ import annotations

import re

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


def share(text: str, expected: str) -> float:
    """The share of ``expected``'s distinct words found in ``text`` (as substrings, so "at" is
    found in a near-miss "that"), 0 to 1."""
    wanted = set(re.findall(r"[a-z']+", expected.lower()))
    return sum(word in text for word in wanted) / len(wanted)


def heard(pcm: bytes, rate_hz: int, expected: str, at_least: float = 0.5) -> str:
    """The recognised text; AssertionError naming it unless at least ``at_least`` of the
    words of ``expected`` were heard. Piper's rendering of "Someone is at the front door."
    is heard as that or "someone is that the frog or"; espeak-ng's as "the goal"."""
    text = words(pcm, rate_hz)
    assert share(text, expected) >= at_least, f"heard {text!r} for {expected!r}"
    return text
