"""AlsaSink on real ALSA through pyalsaaudio: the devices and helpers test_alsa*.py share.

Two PCMs take the capture file (and the PulseAudio server) as ALSA arguments, so one config
serves every test: ``edgespeak_capture:FILE=…`` is a ``file`` PCM over ``null`` (byte-exact,
not paced: writes never block) and ``edgespeak_paced_capture:FILE=…,SERVER=…`` a ``file`` PCM
over a PulseAudio null sink (byte-exact and paced in real time). alsa-lib reloads its config
when ``ALSA_CONFIG_PATH`` changes, so setting it for the module (the ``alsa_config`` fixture,
imported by each test module) is enough. With a FIFO as ``FILE`` either one is a device
that blocks on demand (:func:`fill_pipe`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
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


# ---- a device that blocks: the file PCM's output is a FIFO, full, that nobody reads yet ----
# The file PCM keeps one ALSA buffer of frames and write(2)s what exceeds it (and the rest on
# drain and close), so the first such write(2) blocks, inside whichever PCM call made it.
def fill_pipe(fd: int) -> bytes:
    """Shrink the pipe behind ``fd`` (opened non-blocking) to one page and fill it; returns
    what was written."""
    fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 4096)
    written = bytearray()
    while True:
        try:
            written += b"\x55" * os.write(fd, b"\x55" * 512)
        except BlockingIOError:
            return bytes(written)


def read_to_eof(path: Path) -> bytes:
    """Everything written to the FIFO ``path`` until its last writer closes it."""
    with open(path, "rb") as fifo:
        return fifo.read()


async def stalls(sink: AlsaSink, at_least_s: float, within_s: float) -> float:
    """The longest stall the sink reports (:meth:`AlsaSink.stalled_s`), polled until it
    reaches ``at_least_s`` seconds or ``within_s`` seconds have passed."""
    deadline, longest = time.monotonic() + within_s, 0.0
    while longest < at_least_s and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        longest = max(longest, sink.stalled_s())
    return longest
