"""Text as the local engines read it: Fish's emotion and tone markers taken out.

Fish Audio's models read markers such as ``(happy)``, ``(whispering)`` or ``(in a hurry
tone)`` as directions, not words; espeak-ng and Piper would read them aloud. A marker here is
a parenthesised single word of letters (``(happy)``, ``(Sad)``) or one of Fish's multi-word
markers; anything else in brackets (``(2)``, ``(see below)``) is text and stays.
"""

from __future__ import annotations

import re

MULTI_WORD_MARKERS = (
    "in a hurry tone",
    "soft tone",
    "crying loudly",
    "crowd laughing",
    "background laughter",
    "audience laughing",
)
_MARKER = re.compile(
    r"\(\s*(?:[A-Za-z][A-Za-z_-]{0,30}|"
    + "|".join(re.escape(m).replace(r"\ ", r"\s+") for m in MULTI_WORD_MARKERS)
    + r")\s*\)",
    re.IGNORECASE,
)
_PHONEMES = re.compile(r"\[\[|\]\]")  # Piper reads [[ … ]] as raw phonemes: never from users


def strip_markers(text: str) -> str:
    """``text`` without emotion/tone markers (and Piper's ``[[``/``]]`` phoneme brackets),
    runs of whitespace folded to one space, ends stripped. ``"(happy) Hello!"`` →
    ``"Hello!"``."""
    return " ".join(_PHONEMES.sub(" ", _MARKER.sub(" ", text)).split())
