"""Phrase-cache keys: what a key covers and what it ignores."""

from __future__ import annotations

from edgespeak.sources.cache import normalise_text
from tests.cache_support import key_for


def test_normalise_text_folds_whitespace_and_keeps_case() -> None:
    assert normalise_text("  Hello,\t\n  World \u00a0 again ") == "Hello, World again"


def test_cache_key_folds_whitespace_only() -> None:
    base = key_for("The door is open.")
    assert len(base) == 64 and int(base, 16) >= 0
    assert key_for("  The   door\nis open. ") == base
    assert key_for("The door is open.", prosody={}) == base  # empty prosody = none
    changed = [
        key_for("the door is open."),
        key_for("The door is open", voice=None),
        key_for("The door is open.", voice="alice"),
        key_for("The door is open.", format="opus"),
        key_for("The door is open.", sample_rate=24000),
        key_for("The door is open.", sample_rate=None),
        key_for("The door is open.", prosody={"speed": 1.2}),
        key_for("The door is open.", endpoint="wss://api.fish.audio/v1/tts/live"),
        key_for("The door is open.", model="s2"),
        key_for("The door is open.", provider="other"),
    ]
    assert base not in changed
    assert len(set(changed)) == len(changed)
    # prosody is canonical: key order does not matter, values do
    assert key_for("x", prosody={"a": 1, "b": 2}) == key_for("x", prosody={"b": 2, "a": 1})
    assert key_for("x", prosody={"a": 1}) != key_for("x", prosody={"a": 2})
