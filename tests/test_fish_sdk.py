"""The official Fish Audio SDK (PyPI ``fish-audio-sdk`` 1.3.0, package ``fishaudio``) against
our server: the examples of Fish's SDK guides (docs/protocols.md §7), run as written apart from the
API key, ``base_url`` and the format (their default, mp3, is refused clearly: see the first
test). Audio is decoded with our decoders, Python's ``wave`` and ``opusdec``, and its length
compared with what espeak-ng itself says for the same text, voice and speed.

``edgespeak serve`` runs as a subprocess with a bearer token (one for the module); refusals use
the in-process server with its ``[server] test_*`` switches, driven by ``AsyncFishAudio``.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from fishaudio import AsyncFishAudio, FishAudio
from fishaudio.exceptions import (
    APIError,
    AuthenticationError,
    RateLimitError,
    WebSocketError,
)
from fishaudio.types import FlushEvent, Prosody, TextEvent, TTSConfig
from httpx_ws import WebSocketUpgradeError
from pydantic import SecretStr

from edgespeak.audio.formats import WavStreamDecoder
from edgespeak.audio.opus import OggOpusDecoder
from edgespeak.config import ServerConfig
from edgespeak.server.app import build_app
from harness.stack import LocalServer, free_port
from tests.conftest import base_env
from tests.helpers import serving_app

KEY = "sk-sdk-test-5b0e"
TOLERANCE = 0.03  # relative length difference allowed against espeak-ng's own output


def espeak_seconds(text: str, *, voice: str = "en", speed: float = 1.0) -> float:
    """How long espeak-ng speaks ``text`` (what our server wraps), seconds."""
    rate = ["-s", str(round(175 * speed))] if speed != 1.0 else []
    out = subprocess.run(
        ["espeak-ng", "--stdout", "-v", voice, *rate], input=text.encode(), capture_output=True
    ).stdout
    assert out[:4] == b"RIFF", "espeak-ng missing (apt-get install espeak-ng)"
    return (len(out) - 44) / 2 / 22050


def pcm_seconds(pcm: bytes, rate_hz: int) -> float:
    return len(pcm) / 2 / rate_hz


def wav_pcm(data: bytes) -> tuple[bytes, int]:
    """PCM and rate of a streamed WAV, read with Python's ``wave`` (the header's sizes are the
    streaming placeholder, so the frames are read to the end) and checked against ours."""
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        rate, pcm = w.getframerate(), w.readframes(1 << 30)
    ours = WavStreamDecoder()
    assert ours.feed(data) + ours.finish() == pcm and ours.rate_hz == rate
    return pcm, rate


def opus_pcm(data: bytes, tmp_path: Path) -> bytes:
    """48 kHz PCM of an Ogg Opus stream, decoded by ``opusdec`` and, identically long, by ours."""
    opusdec = shutil.which("opusdec")
    assert opusdec, "opusdec missing (apt-get install opus-tools)"
    (tmp_path / "a.opus").write_bytes(data)
    subprocess.run(
        [opusdec, "--quiet", "--rate", "48000", str(tmp_path / "a.opus"), str(tmp_path / "a.wav")],
        check=True,
    )
    with wave.open(str(tmp_path / "a.wav")) as w:
        assert (w.getframerate(), w.getnchannels()) == (48000, 1)
        theirs = w.readframes(w.getnframes())
    decoder = OggOpusDecoder()
    ours = decoder.feed(data) + decoder.finish()
    assert len(ours) == len(theirs)  # both apply pre-skip and end trimming
    return ours


def assert_length(seconds: float, expected_s: float) -> None:
    assert expected_s > 0.3
    assert abs(seconds - expected_s) <= TOLERANCE * expected_s, (seconds, expected_s)


def rms(pcm: bytes) -> float:
    return float(np.sqrt(np.mean(np.frombuffer(pcm, dtype="<i2").astype(np.float64) ** 2)))


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``edgespeak serve`` with a bearer token; yields its HTTP base URL for the SDK."""
    workdir = tmp_path_factory.mktemp("sdk-server")
    port = free_port()
    config = workdir / "server.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\ntoken = "{KEY}"\nvoice = "en"\n'
    )
    server = LocalServer(config, workdir / "server.log", base_env())
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def client(base_url: str) -> Iterator[FishAudio]:
    with FishAudio(api_key=KEY, base_url=base_url) as fish:
        yield fish


def test_the_seed_example_as_written_asks_for_mp3_and_is_refused_clearly(
    client: FishAudio,
) -> None:
    def text_chunks() -> Iterator[str]:
        yield "Hello, "
        yield "this is "
        yield "real-time "
        yield "streaming!"

    with pytest.raises(WebSocketError, match="ended with error"):
        b"".join(client.tts.stream_websocket(text_chunks(), latency="balanced"))
    with pytest.raises(APIError, match=r"HTTP 400: format 'mp3' is not supported") as info:
        client.tts.convert(text="Hello, welcome to Fish Audio!")
    assert info.value.status == 400


def test_stream_websocket_with_plain_strings_gives_pcm_of_espeaks_length(
    client: FishAudio,
) -> None:
    def text_chunks() -> Iterator[str]:
        yield "Hello, "
        yield "this is "
        yield "real-time "
        yield "streaming!"

    pcm = b"".join(client.tts.stream_websocket(text_chunks(), latency="balanced", format="pcm"))
    assert len(pcm) % 2 == 0
    assert_length(pcm_seconds(pcm, 44100), espeak_seconds("Hello, this is real-time streaming!"))


def test_flush_events_and_text_events_give_wav_segment_by_segment(client: FishAudio) -> None:
    def text_with_flush() -> Iterator[str | TextEvent | FlushEvent]:
        yield "This is the first sentence. "
        yield TextEvent(text="This is the second sentence. ")
        yield FlushEvent()  # Force audio generation NOW
        yield "This starts a new segment. "
        yield TextEvent(text="And continues here.")
        yield FlushEvent()  # Force final generation

    config = TTSConfig(format="wav", sample_rate=16000, latency="normal")
    chunks = list(client.tts.stream_websocket(text_with_flush(), config=config))
    assert chunks[0][:4] == b"RIFF" and all(c[:4] != b"RIFF" for c in chunks[1:])
    pcm, rate = wav_pcm(b"".join(chunks))
    assert rate == 16000
    # Two flushed segments, each spoken on its own as espeak-ng would.
    segments = ["This is the first sentence. This is the second sentence.",
                "This starts a new segment. And continues here."]  # fmt: skip
    assert_length(pcm_seconds(pcm, rate), sum(espeak_seconds(s) for s in segments))


def test_prosody_speed_and_volume_and_a_voice_are_honoured(client: FishAudio) -> None:
    text = "Guten Morgen, das Frühstück ist fertig."

    def once() -> Iterator[str]:
        yield text

    def speak(config: TTSConfig) -> bytes:
        return b"".join(client.tts.stream_websocket(once(), config=config))

    plain = speak(TTSConfig(format="pcm", sample_rate=22050, reference_id="de"))
    fast = speak(TTSConfig(format="pcm", sample_rate=22050, reference_id="de",
                           prosody=Prosody(speed=1.5)))  # fmt: skip
    quiet = speak(TTSConfig(format="pcm", sample_rate=22050, reference_id="de",
                            prosody=Prosody(speed=1.0, volume=-6)))  # fmt: skip
    assert_length(pcm_seconds(plain, 22050), espeak_seconds(text, voice="de"))
    assert_length(pcm_seconds(fast, 22050), espeak_seconds(text, voice="de", speed=1.5))
    assert pcm_seconds(fast, 22050) < 0.8 * pcm_seconds(plain, 22050)
    assert len(quiet) == len(plain)
    assert rms(quiet) / rms(plain) == pytest.approx(10 ** (-6 / 20), rel=0.01)


def test_opus_in_both_bitrate_conventions_decodes_to_espeaks_length(
    client: FishAudio, tmp_path: Path
) -> None:
    text = "The weather today is sunny with clear skies."
    for bitrate in (64, -1000):  # the SDK's kbps, and auto
        config = TTSConfig(format="opus", opus_bitrate=bitrate)
        data = b"".join(client.tts.stream_websocket(iter([text]), config=config))
        assert data[:4] == b"OggS"
        assert_length(pcm_seconds(opus_pcm(data, tmp_path), 48000), espeak_seconds(text))


def test_convert_over_http_returns_the_whole_audio(client: FishAudio, tmp_path: Path) -> None:
    text = "Welcome to our product demonstration."
    wav = client.tts.convert(text=text, format="wav")
    pcm, rate = wav_pcm(wav)
    assert rate == 44100
    assert_length(pcm_seconds(pcm, rate), espeak_seconds(text))
    my_config = TTSConfig(prosody=Prosody(speed=1.2, volume=-5), reference_id="en-us",
                          format="pcm", latency="balanced")  # fmt: skip
    fast = client.tts.convert(text=text, config=my_config)
    assert_length(pcm_seconds(fast, 44100), espeak_seconds(text, voice="en-us", speed=1.2))
    opus = client.tts.convert(text=text, config=TTSConfig(format="opus", opus_bitrate=32))
    assert_length(pcm_seconds(opus_pcm(opus, tmp_path), 48000), espeak_seconds(text))


def test_a_wrong_key_and_an_unknown_voice_are_the_sdks_typed_errors(base_url: str) -> None:
    with FishAudio(api_key="sk-wrong", base_url=base_url) as wrong:
        with pytest.raises(AuthenticationError, match="HTTP 401") as info:
            wrong.tts.convert(text="Hi", format="pcm")
        assert "sk-wrong" not in str(info.value) and KEY not in str(info.value)
    with FishAudio(api_key=KEY, base_url=base_url) as fish:
        with pytest.raises(APIError, match="unknown voice 'no-such-voice'"):
            fish.tts.convert(text="Hi", format="pcm", reference_id="no-such-voice")


async def test_async_client_streams_and_converts(base_url: str) -> None:
    client = AsyncFishAudio(api_key=KEY, base_url=base_url)

    async def llm_stream() -> AsyncIterator[str]:
        """Simulates text chunks from an LLM."""
        tokens = ["The ", "weather ", "today ", "is ", "sunny ", "with ", "clear ", "skies. ",
                  "Perfect ", "for ", "outdoor ", "activities!"]  # fmt: skip
        for token in tokens:
            yield token

    text = "The weather today is sunny with clear skies. Perfect for outdoor activities!"
    # 1.3.0's stream_websocket is an async generator: iterate it (the guide's "await" fails).
    stream = client.tts.stream_websocket(llm_stream(), config=TTSConfig(format="pcm"))
    pcm = b"".join([chunk async for chunk in stream])
    assert_length(pcm_seconds(pcm, 44100), espeak_seconds(text))
    audio = await client.tts.convert(text="Let me show you the key features.", format="wav")
    pcm, rate = wav_pcm(audio)
    assert_length(pcm_seconds(pcm, rate), espeak_seconds("Let me show you the key features."))
    chunks = [c async for c in await client.tts.stream(text="Long text here", format="pcm")]
    assert len(chunks) >= 1 and sum(map(len, chunks)) % 2 == 0


@pytest.mark.parametrize(
    ("status", "error"), [(401, AuthenticationError), (402, APIError), (429, RateLimitError)]
)
async def test_refusal_switch_reaches_the_sdk_over_http_and_websocket(
    status: int, error: type[APIError]
) -> None:
    app = build_app(ServerConfig(voice="en", token=SecretStr(KEY), test_refuse_status=status))
    async with serving_app(app) as url:
        client = AsyncFishAudio(api_key=KEY, base_url=http_base(url))
        with pytest.raises(error) as info:
            await client.tts.convert(text="Hi", format="pcm")
        assert info.value.status == status and "test_refuse_status" in info.value.message
        # The SDK lets httpx-ws's upgrade error through for a refused WebSocket.
        with pytest.raises(WebSocketUpgradeError) as upgrade:
            _ = [c async for c in client.tts.stream_websocket(_one("Hi"), format="pcm")]
        assert upgrade.value.response.status_code == status


@pytest.mark.parametrize("fault", ["error_before_audio", "error_after_audio"])
async def test_a_session_ending_with_error_is_the_sdks_websocket_error(fault: str) -> None:
    app = build_app(ServerConfig(voice="en", test_session_fault=fault))
    async with serving_app(app) as url:
        client = AsyncFishAudio(api_key=KEY, base_url=http_base(url))
        got: list[bytes] = []
        # 1.3.0's async client lets httpx-ws's anyio task group wrap it in an ExceptionGroup.
        with pytest.raises((WebSocketError, BaseExceptionGroup)) as info:
            async for chunk in client.tts.stream_websocket(_one("Hello. World."), format="pcm"):
                got.append(chunk)
    assert (
        info.match("ended with error")
        if isinstance(info.value, WebSocketError)
        else (info.group_contains(WebSocketError, match="ended with error"))
    )
    assert bool(got) == (fault == "error_after_audio")


async def _one(text: str) -> AsyncIterator[str]:
    yield text


def http_base(ws_url: str) -> str:
    """``ws://host:port/v1/tts/live`` → ``http://host:port``, the SDK's ``base_url``."""
    return "http://" + ws_url.removeprefix("ws://").split("/", 1)[0]
