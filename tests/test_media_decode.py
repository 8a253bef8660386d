"""Media files → s16le mono PCM, fed in pieces as a download brings them: sniffing (WAV, FLAC,
MP3, Ogg Vorbis, Ogg Opus, and what is not audio), streamed WAV sizes, truncation, and the
soxr conversion to the speech rate. The files are made by libsndfile (soundfile)."""

from __future__ import annotations

import numpy as np
import pytest

from edgespeak.audio.media import open_decoder
from edgespeak.audio.opus import OggOpusEncoder
from edgespeak.audio.resample import Resampler
from edgespeak.audio.sniff import sniff
from edgespeak.base.errors import AudioFormatError
from tests.esphome_peer import encoded, streaming_wav, tone

FORMATS = [  # (soundfile format, subtype, our name)
    ("WAV", "PCM_16", "wav"),
    ("WAV", "PCM_24", "wav"),
    ("WAV", "FLOAT", "wav"),
    ("FLAC", "PCM_16", "flac"),
    ("MP3", "MPEG_LAYER_III", "mp3"),
    ("OGG", "VORBIS", "vorbis"),
]


def decode(data: bytes, piece: int = 1000) -> tuple[bytes, int]:
    """Sniff ``data`` and decode it fed ``piece`` bytes at a time: (PCM, rate)."""
    head, info = b"", None
    for i in range(0, len(data), piece):
        head = data[: i + piece]
        if (info := sniff(head)) is not None:
            break
    assert info is not None
    decoder = open_decoder(info)
    try:
        out = b"".join(decoder.feed(data[i : i + piece]) for i in range(0, len(data), piece))
        out += decoder.finish()
    finally:
        decoder.close()
    assert decoder.rate_hz == info.rate_hz
    return out, info.rate_hz


def dominant_hz(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


@pytest.mark.parametrize(("fmt", "subtype", "name"), FORMATS)
@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (16000, 1)])
def test_each_format_decodes_to_the_tone_in_mono(
    fmt: str, subtype: str, name: str, rate: int, channels: int
) -> None:
    if fmt == "MP3" and rate == 16000:
        rate = 16000  # MPEG-2 layer III: still a valid rate
    data = encoded(fmt, subtype, 1.0, rate, channels)
    info = sniff(data[:4096])
    assert info is not None and (info.format, info.rate_hz, info.channels) == (name, rate, channels)
    pcm, got_rate = decode(data)
    frames = len(pcm) // 2
    assert got_rate == rate
    assert rate * 0.98 <= frames <= rate * 1.1  # mp3 adds encoder padding
    assert abs(dominant_hz(pcm, rate) - 440) < 5
    level = np.sqrt(np.mean(np.frombuffer(pcm, dtype="<i2").astype(np.float64) ** 2))
    assert 0.3 * 32768 < level < 0.4 * 32768  # half-scale sine: rms 0.354


def test_ogg_opus_mono_decodes() -> None:
    encoder = OggOpusEncoder()
    pcm = (tone(1.0, 48000)[:, 0] * 32767).astype("<i2").tobytes()
    data = encoder.header() + encoder.encode(pcm) + encoder.finish()
    out, rate = decode(data)
    assert rate == 48000 and abs(len(out) // 2 - 48000) < 960
    assert abs(dominant_hz(out, rate) - 440) < 5


@pytest.mark.parametrize("size_field", [0, 0xFFFFFFFF], ids=["zero", "ffffffff"])
def test_a_streamed_wav_of_unknown_size_plays_to_its_end(size_field: int) -> None:
    samples = (tone(0.5, 22050)[:, 0] * 32767).astype("<i2").tobytes()
    pcm, rate = decode(streaming_wav(22050, size_field) + samples, piece=333)
    assert rate == 22050 and pcm == samples


def test_a_truncated_flac_is_an_error() -> None:
    data = encoded("FLAC", "PCM_16", 2.0, 44100, 1)
    with pytest.raises(AudioFormatError, match="truncated FLAC"):
        decode(data[: len(data) // 2])


def test_a_wav_shorter_than_its_header_says_is_an_error() -> None:
    data = encoded("WAV", "PCM_16", 1.0, 22050, 1)
    with pytest.raises(AudioFormatError, match="truncated WAV: 1000 bytes"):
        decode(data[:-1000])


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<!DOCTYPE html><html><body>Login</body></html>", "HTML page"),
        (b'{"error": "not found"}', "JSON"),
        (b"\x00\x01\x02\x03" * 10, "unknown format"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "RIFF file that is not WAVE"),
    ],
)
def test_what_is_not_audio_is_named(body: bytes, why: str) -> None:
    with pytest.raises(AudioFormatError, match=f"not audio: .*{why}"):
        sniff(body)


def test_sniffing_waits_for_the_header() -> None:
    data = encoded("FLAC", "PCM_16", 0.2, 44100, 1)
    assert sniff(data[:10]) is None
    assert sniff(data[:100]) is not None


@pytest.mark.parametrize("rates", [(44100, 22050), (16000, 22050), (22050, 22050)])
def test_the_resampler_keeps_the_length_and_the_pitch(rates: tuple[int, int]) -> None:
    source, target = rates
    pcm = (tone(1.0, source)[:, 0] * 32767).astype("<i2").tobytes()
    resampler = Resampler(source, target)
    out = b"".join(resampler.process(pcm[i : i + 4410]) for i in range(0, len(pcm), 4410))
    out += resampler.flush()
    assert abs(len(out) // 2 - target) <= 2
    assert abs(dominant_hz(out, target) - 440) < 3
    if source == target:
        assert out == pcm
