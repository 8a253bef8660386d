"""The daemon loads what it uses: a real ``edgespeak run`` with the default features speaks, and
the modules it imported over its whole life (``-X importtime``'s log) include none of a disabled
feature's, nor numpy, soxr or the libraries it no longer needs."""

from __future__ import annotations

import importlib.metadata
import json
import re
import sys
from types import FrameType
from typing import Any

import pytest

from bench.isolated import unit_python_env
from edgespeak.sources.voices import find_piper_voices
from harness.stack import stop_process
from tests.conftest import Stack, daemon_process, watching

# Never in a daemon with the default features, whatever it speaks (prefixes of module names).
NOT_LOADED = (
    "numpy", "soxr", "humanize", "tqdm",  # the DSP is plain Python; CLI-only libraries
    "edgespeak.server", "edgespeak.cli.cache", "edgespeak.cli.doctor",  # other commands
    "edgespeak.providers.cartesia", "edgespeak.providers.voices",  # provider fish; no voices
    "edgespeak.inlets.hermes",  # [hermes] disabled
    "edgespeak.inlets.esphome", "aioesphomeapi", "zeroconf", "noise", "miniaudio",  # [esphome]
    "edgespeak.audio.media", "edgespeak.audio.resample",  # no media URL
    "edgespeak.sources.piper", "piper", "onnxruntime",  # no Piper [fallback] voice
    "edgespeak.group.lead", "edgespeak.group.follow", "edgespeak.group.relay",  # no other room
)  # fmt: skip
FILES = importlib.metadata.Distribution.files.fget
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| ( *)(\S+)$", re.MULTILINE)


@pytest.mark.parametrize("fmt", ["pcm", "opus"])
async def test_a_default_daemon_imports_nothing_of_what_it_does_not_use(
    stack: Stack, fmt: str
) -> None:
    config = stack.config(fmt=fmt, rate=22050 if fmt == "pcm" else 48000)
    # As the systemd unit runs it: -OO (no docstrings, no asserts), bytecode in a cache prefix.
    env = unit_python_env(stack.workdir / "unit-cache") | {"PYTHONPROFILEIMPORTTIME": "1"}
    assert env["PYTHONOPTIMIZE"] == "2"
    with daemon_process(config, stack.capture, stack.workdir, env=env) as proc:
        async with watching(stack.broker.port) as w:
            chime = {"chime": "doorbell"} if fmt == "pcm" else {}  # the chime is 22050 Hz
            body = {"text": "Someone is at the front door.", "id": "door", **chime}
            await w.announce(json.dumps(body))
            done = await w.wait("finished", "failed", ann_id="door")
        stop_process(proc)
    assert done["state"] == "finished", done
    log = stack.daemon_log.read_text()
    imported = {name for _, name in IMPORTED.findall(log)}
    assert {"edgespeak.daemon", "aiomqtt", "aiohttp", "pydantic"} <= imported, "log not parsed"
    loaded = sorted(m for m in imported if m.startswith(NOT_LOADED))
    assert loaded == [], f"imported though unused: {loaded}"
    assert "start-up settled" in log, "the start-up's memory was not settled"
    assert any((stack.workdir / "unit-cache").rglob("*.opt-2.pyc")), "not run with -OO"


def test_looking_for_piper_voices_parses_only_the_voice_packages_file_lists() -> None:
    """Every daemon start looks for Piper voices among the installed packages. Parsing each
    package's whole file list into paths (``Distribution.files``) left ~1 MiB of the daemon's
    heap fragmented; only a package whose list names a voice config is parsed now."""
    parsed: list[str] = []

    def note(frame: FrameType, event: str, _: Any) -> None:
        if event == "call" and frame.f_code is FILES.__code__:
            parsed.append(frame.f_locals["self"].metadata["Name"])

    sys.setprofile(note)
    try:
        catalogue = find_piper_voices()
    finally:
        sys.setprofile(None)
    voice_packages = {v.source.removeprefix("package:") for v in catalogue.voices.values()}
    assert voice_packages, "no voice package installed: nothing to compare with"
    assert set(parsed) == voice_packages, f"file lists parsed: {sorted(parsed)}"
