"""The chime library: built-in doorbell, a sounds directory over it, resampling, bad files, and
its first decode kept off the event loop."""

from __future__ import annotations

import asyncio
import io
import threading
import time
import wave
from pathlib import Path

import numpy as np
import ormsgpack
import pytest
from aiohttp import web

from edgespeak.audio.alsa import AlsaSink
from edgespeak.base.announcement import Announcement
from edgespeak.base.events import Event
from edgespeak.config import Settings
from edgespeak.inlets.homeassistant.state import NodeState
from edgespeak.inlets.mqtt.commands import Commands
from edgespeak.inlets.mqtt.link import Incoming
from edgespeak.providers.fish import FishLiveClient
from edgespeak.scheduling.scheduler import Scheduler
from edgespeak.sources.synthesis import Synthesizer
from edgespeak.speaking.chimes import ChimeError, Chimes
from edgespeak.speaking.speaker import Speaker
from edgespeak.speaking.volume import VolumeStore
from edgespeak.wire import fish as fp
from harness.stack import capture_alsa_conf
from tests.helpers import serving_live


def wav_bytes(samples: np.ndarray, rate: int, channels: int = 1) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())
    return out.getvalue()


def s16(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int32)


def test_the_built_in_doorbell_is_a_clean_chime() -> None:
    pcm = s16(Chimes(None).pcm("doorbell", 22050))
    assert 1.0 <= len(pcm) / 22050 <= 2.0
    assert pcm[0] == 0 and pcm[-1] == 0  # starts and ends on silence: no click
    assert np.abs(pcm[:44]).max() < 8000  # a 2 ms attack, not a full-scale step
    assert 15000 < np.abs(pcm).max() <= 16384  # peaks at -6 dBFS
    assert "doorbell" in Chimes(None).names()


def test_a_sounds_dir_adds_chimes_and_overrides_built_ins(tmp_path: Path) -> None:
    tone = (np.sin(np.arange(4410) * 2 * np.pi * 440 / 44100) * 8000).round()
    (tmp_path / "ding.wav").write_bytes(wav_bytes(tone, 44100))
    (tmp_path / "doorbell.wav").write_bytes(wav_bytes(np.full(100, 1234), 22050))
    chimes = Chimes(tmp_path)
    assert {"ding", "doorbell"} <= set(chimes.names())
    ding = s16(chimes.pcm("ding", 22050))  # 100 ms at 44.1 kHz → 22.05 kHz
    assert len(ding) == 2205
    assert 7000 < np.abs(ding[200:-200]).max() < 8800
    assert np.all(s16(chimes.pcm("doorbell", 22050)) == 1234)
    assert s16(chimes.pcm("ding", 44100)).tolist() == tone.astype(int).tolist()


def test_stereo_chimes_are_mixed_to_mono(tmp_path: Path) -> None:
    frames = np.column_stack([np.full(50, 1000), np.full(50, 3000)]).reshape(-1)
    (tmp_path / "st.wav").write_bytes(wav_bytes(frames, 16000, channels=2))
    assert np.all(s16(Chimes(tmp_path).pcm("st", 16000)) == 2000)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("nosuch", None, "unknown chime 'nosuch' (available: doorbell"),
        ("../etc/passwd", None, "not a plain file name"),
        ("broken", b"RIFF\x00\x00", "chime 'broken': not a PCM WAV file"),
        ("empty", wav_bytes(np.zeros(0), 22050), "holds no audio"),
    ],
)
def test_bad_chimes_raise_a_clear_error(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    if content is not None:
        (tmp_path / f"{name}.wav").write_bytes(content)
    with pytest.raises(ChimeError, match=message.replace("(", r"\(").replace(".", r"\.")):
        Chimes(tmp_path).pcm(name, 22050)


class NotingChimes(Chimes):
    """The real chime library, noting the thread of every first read and decode."""

    def __init__(self) -> None:
        super().__init__(None)
        self.threads: set[int] = set()

    def _load(self, name: str, rate_hz: int) -> bytes:
        self.threads.add(threading.get_ident())
        return super()._load(name, rate_hz)


async def test_a_chimes_first_read_and_decode_run_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real Speaker plays an announcement with a chime through real ALSA (a ``file`` PCM)
    and a real Fish live session; the chime's WAV is read and decoded in a thread."""
    out = tmp_path / "out.raw"
    env = capture_alsa_conf(tmp_path / "asound.conf", out)
    monkeypatch.setenv("ALSA_CONFIG_PATH", env["ALSA_CONFIG_PATH"])
    speech = (np.arange(2205) % 200 * 50).astype("<i2").tobytes()

    async def speak(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if ormsgpack.unpackb(msg.data)["event"] == "stop":
                await ws.send_bytes(fp.audio(speech))
                await ws.send_bytes(fp.finish("stop"))
        return ws

    chimes = NotingChimes()
    events: list[Event] = []
    sink = AlsaSink("default", fade_ms=0)
    try:
        async with serving_live(speak) as url, FishLiveClient(url) as tts:
            synth = Synthesizer(tts, "pcm", 22050, None)
            speaker = Speaker(Settings(tts={"url": url}), synth, url, sink, None, None,
                              events.append, chimes)  # fmt: skip
            done = await speaker.speak(Announcement(text="Hello.", chime="doorbell"))
    finally:
        await asyncio.to_thread(sink.close)
    assert (done.state, done.source, done.warning) == ("finished", "stream", None), done
    assert chimes.threads and threading.get_ident() not in chimes.threads
    played = out.read_bytes()
    assert played.startswith(Chimes(None).pcm("doorbell", 22050)) and played.endswith(speech)


async def test_the_chime_command_reads_a_new_chime_off_the_event_loop(tmp_path: Path) -> None:
    """Bad before: the ``<prefix>/<node>/chime`` command (Home Assistant's test-chime button)
    read and decoded a chime's WAV on the event loop the first time (~40 ms here when numpy
    was imported to resample it). A real Scheduler takes what the command queues."""
    chimes = NotingChimes()
    events: list[Event] = []
    queued: asyncio.Queue[Announcement] = asyncio.Queue()

    async def speak(ann: Announcement) -> Event:
        await queued.put(ann)
        return Event(ann.id, "finished")

    scheduler = Scheduler(speak, events.append, queue_max=4, ttl_s=60, dedup_window_s=60,
                          on_internal_error=lambda ann, exc: None)  # fmt: skip
    settings = Settings()
    refused: asyncio.Queue[Event] = asyncio.Queue()  # the command's own events
    commands = Commands(settings, scheduler, chimes, AlsaSink("default"), VolumeStore(tmp_path),
                        NodeState(), refused.put_nowait, lambda: None)  # fmt: skip
    running = asyncio.create_task(scheduler.run())
    try:
        for payload in (b"doorbell", b"no-such-chime"):
            commands.chime(Incoming("speech/node/chime", payload, time.monotonic(), None, False))
        played = await asyncio.wait_for(queued.get(), 10)
        failed = await asyncio.wait_for(refused.get(), 10)
    finally:
        scheduler.close("the test is over")
        await running
    assert played.sound == Chimes(None).pcm("doorbell", settings.tts.rate_hz)
    assert chimes.threads and threading.get_ident() not in chimes.threads
    assert failed.state == "failed" and "unknown chime 'no-such-chime'" in (failed.error or "")
