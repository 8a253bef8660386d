"""AlsaSink on real ALSA through pyalsaaudio: the devices and helpers test_alsa*.py share.

Two PCMs take the capture file (and the PulseAudio server) as ALSA arguments, so one config
serves every test: ``edgespeak_capture:FILE=…`` is a ``file`` PCM over ``null`` (byte-exact,
not paced: writes never block) and ``edgespeak_paced_capture:FILE=…,SERVER=…`` a ``file`` PCM
over a PulseAudio null sink (byte-exact and paced in real time). alsa-lib reloads its config
when ``ALSA_CONFIG_PATH`` changes, so setting it for the module (the ``alsa_config`` fixture,
imported by each test module) is enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgespeak.audio.alsa import AlsaSink
from edgespeak.audio.playback import Playback
from harness.stack import PulseAudio

RATE = 22050
FS = 32767  # full scale
FADE = round(RATE * 8 / 1000)  # frames in the default 8 ms fade
ALSA_CONF = """
pcm.edgespeak_capture {
  @args [ FILE ]
  @args.FILE { type string }
  type file
  slave.pcm "null"
  file $FILE
  format "raw"
}
pcm.edgespeak_paced_capture {
  @args [ FILE SERVER ]
  @args.FILE { type string }
  @args.SERVER { type string }
  type file
  slave.pcm { type pulse server $SERVER }
  file $FILE
  format "raw"
}
"""


@pytest.fixture(scope="module", autouse=True)
def alsa_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    conf = tmp_path_factory.mktemp("alsa") / "asound.conf"
    conf.write_text(ALSA_CONF)
    saved = os.environ.get("ALSA_CONFIG_PATH")
    os.environ["ALSA_CONFIG_PATH"] = f"/usr/share/alsa/alsa.conf:{conf}"
    yield
    if saved is None:
        del os.environ["ALSA_CONFIG_PATH"]
    else:
        os.environ["ALSA_CONFIG_PATH"] = saved


def capture(path: Path) -> str:
    return f'edgespeak_capture:FILE="{path}"'


def paced(path: Path, pulse: PulseAudio) -> str:
    return f'edgespeak_paced_capture:FILE="{path}",SERVER="{pulse.server}"'


def dc(frames: int, value: int) -> bytes:
    return np.full(frames, value, dtype="<i2").tobytes()


def noise(frames: int, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    return rng.integers(-32768, 32768, frames, dtype=np.int16).astype("<i2").tobytes()


def s16(data: bytes) -> np.ndarray[Any, np.dtype[np.int16]]:
    return np.frombuffer(data, dtype="<i2")


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@contextlib.asynccontextmanager
async def sink_on(device: str, **options: Any) -> AsyncIterator[AlsaSink]:
    sink = AlsaSink(device, **options)
    try:
        yield sink
    finally:
        await asyncio.to_thread(sink.close)


async def play(sink: AlsaSink, pcm: bytes, chunk: int = 882, **begin: Any) -> Playback:
    """One utterance: begin at RATE, write ``pcm`` in chunks of ``chunk`` bytes, end."""
    utt = await sink.begin(RATE, **begin)
    for part in chunked(pcm, chunk):
        await sink.write(utt, part)
    return await sink.end(utt)
