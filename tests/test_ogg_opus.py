"""Ogg (RFC 3533) and Ogg Opus (RFC 7845) against real files from opus-tools and espeak-ng speech.

Needs the Debian tools espeak-ng, opusenc and opusdec on PATH.
"""

from __future__ import annotations

import gc
import random
import shutil
import struct
import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soxr

from edgespeak.audio.ogg import OggPacket, OggPacketReader, OggPageWriter, ogg_crc32
from edgespeak.audio.opus import OPUS_RATE_HZ, OggOpusDecoder, OggOpusEncoder
from edgespeak.base.errors import AudioFormatError


@pytest.fixture(autouse=True)
def tools_installed() -> None:
    """Fail (never skip) without the reference tools; scripts/setup.sh installs them."""
    missing = [t for t in ("espeak-ng", "opusenc", "opusdec") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run scripts/setup.sh (espeak-ng, opus-tools)")


TEXT = "Attention please. The washing machine has finished its cycle."
Samples = npt.NDArray[np.int16]


def _chunks(data: bytes, rng: random.Random, hi: int = 700) -> Iterator[bytes]:
    pos = 0
    while pos < len(data):
        size = rng.choice([1, 2, 3, rng.randint(1, hi)])
        yield data[pos : pos + size]
        pos += size


def _read_wav(path: Path) -> tuple[Samples, int]:
    with wave.open(str(path)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), "<i2"), w.getframerate()


def _snr_db(ref: Samples, out: Samples) -> float:
    r, o = ref.astype(np.float64), out.astype(np.float64)
    noise = float(np.sum((r - o) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(r**2)) / noise)


def _pages(data: bytes) -> list[bytes]:
    """Split a whole Ogg file into pages with plain struct (independent of OggPacketReader)."""
    pages, pos = [], 0
    while pos < len(data):
        nseg = data[pos + 26]
        size = 27 + nseg + sum(data[pos + 27 : pos + 27 + nseg])
        pages.append(data[pos : pos + size])
        pos += size
    return pages


def _decode_all(data: bytes, rng: random.Random) -> Samples:
    dec = OggOpusDecoder()
    out = b"".join(dec.feed(c) for c in _chunks(data, rng)) + dec.finish()
    return np.frombuffer(out, "<i2")


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Samples, int]:
    """espeak-ng speech: the WAV path, its samples and its rate (22050 Hz)."""
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), TEXT], check=True)
    samples, rate = _read_wav(path)
    return path, samples, rate


@pytest.fixture(scope="module")
def speech48(speech: tuple[Path, Samples, int]) -> Samples:
    """The same speech resampled to 48 kHz with soxr, as int16."""
    _, samples, rate = speech
    y: npt.NDArray[np.float32] = soxr.resample(samples.astype(np.float32) / 32768, rate, 48000)
    return np.clip(np.rint(y * 32768), -32768, 32767).astype(np.int16)


@pytest.fixture(scope="module")
def opusenc_file(speech: tuple[Path, Samples, int]) -> Path:
    wav = speech[0]
    out = wav.with_suffix(".opus")
    subprocess.run(["opusenc", "--quiet", str(wav), str(out)], check=True)
    return out


def _opusdec(path: Path) -> Samples:
    wav = path.with_name(path.stem + "-opusdec.wav")
    cmd = ["opusdec", "--quiet", "--no-dither", "--rate", "48000", "--force-wav"]
    subprocess.run([*cmd, str(path), str(wav)], check=True)
    samples, rate = _read_wav(wav)
    assert rate == OPUS_RATE_HZ
    return samples


# --- Ogg ---------------------------------------------------------------------------------------


def test_crc_known_value() -> None:
    # CRC-32/CKSUM's check value is 0x765E7680 with a final XOR of 0xFFFFFFFF; Ogg has no XOR.
    assert ogg_crc32(b"123456789") == 0x765E7680 ^ 0xFFFFFFFF
    assert ogg_crc32(b"") == 0


def test_crc_and_pages_match_opusenc(opusenc_file: Path) -> None:
    data = opusenc_file.read_bytes()
    pages = _pages(data)
    assert len(pages) >= 3
    for page in pages:
        stored = struct.unpack_from("<I", page, 22)[0]
        assert ogg_crc32(page[:22] + b"\0\0\0\0" + page[26:]) == stored
    # Rebuild every page with our writer: byte-identical (opusenc never splits packets here).
    serial = struct.unpack_from("<I", pages[0], 14)[0]
    writer = OggPageWriter(serial)
    for page in pages:
        flags, granule, nseg = page[5], struct.unpack_from("<q", page, 6)[0], page[26]
        assert not flags & 1 and page[26 + nseg] != 255, "test assumes no page-spanning packets"
        packets, pos, cur = [], 27 + nseg, b""
        for lace in page[27 : 27 + nseg]:
            cur += page[pos : pos + lace]
            pos += lace
            if lace < 255:
                packets.append(cur)
                cur = b""
        rebuilt = writer.page(packets, granule, bos=bool(flags & 2), eos=bool(flags & 4))
        assert rebuilt == page


def test_reader_random_chunks_opusenc(opusenc_file: Path) -> None:
    data = opusenc_file.read_bytes()
    reader = OggPacketReader()
    packets = [p for c in _chunks(data, random.Random(1)) for p in reader.feed(c)]
    reader.finish()
    assert packets[0].data.startswith(b"OpusHead") and packets[0].bos
    assert packets[0].granule_position == 0
    assert packets[1].data.startswith(b"OpusTags") and not packets[1].bos
    assert packets[-1].eos and reader.eos_seen
    last = _pages(data)[-1]
    on_last_page = sum(1 for lace in last[27 : 27 + last[26]] if lace < 255)
    assert [p.eos for p in packets].count(True) == on_last_page  # every packet of the EOS page
    assert all(p.eos for p in packets[-on_last_page:])
    granules = [p.granule_position for p in packets[2:] if p.granule_position is not None]
    assert granules == sorted(granules) and len(granules) == len(_pages(data)) - 2
    assert packets == OggPacketReader().feed(data)  # same result whole or in 1..700-byte bits


def _raw_page(flags: int, granule: int, seq: int, lacing: bytes, body: bytes) -> bytes:
    page = bytearray(struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, 7, seq, 0, len(lacing)))
    page += lacing + body
    struct.pack_into("<I", page, 22, ogg_crc32(bytes(page)))
    return bytes(page)


def test_reader_reassembles_packet_spanning_pages_one_byte_at_a_time() -> None:
    big = bytes(range(256)) * 3  # 768 bytes: lacing 255,255,255,3
    writer = OggPageWriter(7)
    stream = writer.page([b"head"], 0, bos=True)
    stream += _raw_page(0, -1, 1, b"\xff\xff", big[:510])  # no packet ends: granule -1
    stream += _raw_page(1, 1000, 2, b"\xff\x03\x05", big[510:] + b"tail!")
    stream += _raw_page(4, 2000, 3, b"\xff\x00\x00", bytes(255))  # 255-byte packet, empty one
    reader = OggPacketReader()
    got: list[OggPacket] = []
    for i in range(len(stream)):
        got += reader.feed(stream[i : i + 1])
    reader.finish()
    assert got == [
        OggPacket(b"head", 0, True, False),
        OggPacket(big, None, False, False),
        OggPacket(b"tail!", 1000, False, False),
        OggPacket(bytes(255), None, False, True),
        OggPacket(b"", 2000, False, True),
    ]


def test_writer_lacing_and_limits() -> None:
    writer = OggPageWriter(1)
    first = writer.page([bytes(255), b"x"], 5, bos=True)
    assert first[26:30] == b"\x03\xff\x00\x01"  # 255 needs a terminating 0 lacing value
    second = writer.page([bytes(254 * 255)], 6, eos=True)
    assert struct.unpack_from("<I", second, 18)[0] == 1 and second[5] == 4
    with pytest.raises(ValueError, match="255"):
        writer.page([bytes(255 * 255)], 0)  # needs 256 lacing values


def test_reader_rejects_bad_pages() -> None:
    page = OggPageWriter(3).page([b"abc"], 0, bos=True)
    flipped = bytearray(page)
    flipped[-2] ^= 0x40
    with pytest.raises(AudioFormatError, match="CRC"):
        OggPacketReader().feed(bytes(flipped))
    with pytest.raises(AudioFormatError, match="capture pattern"):
        OggPacketReader().feed(b"OggX")
    with pytest.raises(AudioFormatError, match="second Ogg logical stream"):
        OggPacketReader().feed(page + OggPageWriter(4).page([b"x"], 0, bos=True))
    reader = OggPacketReader()
    reader.feed(page[:-1])
    with pytest.raises(AudioFormatError, match="truncated"):
        reader.finish()


# --- Ogg Opus decoding -------------------------------------------------------------------------


def test_decoder_matches_opusdec(opusenc_file: Path, speech: tuple[Path, Samples, int]) -> None:
    _, samples, rate = speech
    ours = _decode_all(opusenc_file.read_bytes(), random.Random(2))
    theirs = _opusdec(opusenc_file)
    # opusenc sets the final granule so the output is ceil(input duration at 48 kHz) samples.
    assert len(ours) == -(-len(samples) * OPUS_RATE_HZ // rate) == len(theirs)
    assert _snr_db(theirs, ours) >= 30.0  # same libopus; measured bit-exact with --no-dither


def _opus_headers(writer: OggPageWriter, channels: int = 1) -> bytes:
    head = struct.pack("<8sBBHIhB", b"OpusHead", 1, channels, 312, 48000, 0, 0)
    tags = b"OpusTags" + struct.pack("<I", 4) + b"test" + struct.pack("<I", 0)
    return writer.page([head], 0, bos=True) + writer.page([tags], 0)


def test_decoder_rejects_stereo_head() -> None:
    with pytest.raises(AudioFormatError, match="mono"):
        OggOpusDecoder().feed(_opus_headers(OggPageWriter(1), channels=2))


def test_decoder_rejects_missing_head() -> None:
    with pytest.raises(AudioFormatError, match="OpusHead"):
        OggOpusDecoder().feed(OggPageWriter(1).page([b"OggVorbis"], 0, bos=True))


def test_decoder_wraps_corrupt_packet() -> None:
    writer = OggPageWriter(9)
    stream = _opus_headers(writer)
    stream += writer.page([b"\x03\x00"], 960)  # code 3 with zero frames: invalid (RFC 6716 3.2.5)
    dec = OggOpusDecoder()
    with pytest.raises(AudioFormatError, match="corrupt Opus packet"):
        dec.feed(stream)


def test_decoding_leaves_nothing_for_the_cyclic_collector(speech48: Samples) -> None:
    """Packets decode into the decoder's one buffer: opuslib_next's decode() left an 11.5 KB
    ctypes array in a reference cycle per packet, freed only by the cyclic collector (which
    may not run again until the next announcement)."""
    enc = OggOpusEncoder(serial=5)
    data = enc.header() + enc.encode(speech48.tobytes()) + enc.finish()
    dec = OggOpusDecoder()
    gc.collect()
    gc.disable()
    try:
        pcm = dec.feed(data) + dec.finish()
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert len(pcm) > 48000 and unreachable == 0


def test_decoder_rejects_eos_page_without_granule() -> None:
    writer = OggPageWriter(9)
    stream = _opus_headers(writer) + writer.page([b"\xf8\xff\xfe"], -1, eos=True)  # CELT 20 ms
    with pytest.raises(AudioFormatError, match="granule"):
        OggOpusDecoder().feed(stream)


def test_encoder_rejects_bad_bitrate() -> None:
    with pytest.raises(ValueError, match="bitrate"):
        OggOpusEncoder(bitrate_bps=100)


def test_decoder_truncated_stream_fails_on_finish(speech48: Samples) -> None:
    enc = OggOpusEncoder(serial=5)
    data = enc.header() + enc.encode(speech48[:20000].tobytes()) + enc.finish()
    full = OggOpusDecoder().feed(data)
    dec = OggOpusDecoder()
    dec.feed(data[:-10])
    with pytest.raises(AudioFormatError, match="truncated"):
        dec.finish()
    dec = OggOpusDecoder()
    dec.feed(data[:30])  # inside the OpusHead page
    with pytest.raises(AudioFormatError, match="truncated"):
        dec.finish()
    dec = OggOpusDecoder()
    dec.feed(data[:47])  # OpusHead page complete, OpusTags page not started
    with pytest.raises(AudioFormatError, match="headers"):
        dec.finish()
    # Cut at a page boundary with no EOS page: accepted, output is a prefix of the full decode.
    cut = sum(len(p) for p in _pages(data)[:12])
    dec = OggOpusDecoder()
    part = dec.feed(data[:cut]) + dec.finish()
    assert len(part) == 2 * (10 * 960 - enc.pre_skip) and full.startswith(part)


def test_decoder_flipped_byte_reports_crc(opusenc_file: Path) -> None:
    data = bytearray(opusenc_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    with pytest.raises(AudioFormatError, match="CRC"):
        _decode_all(bytes(data), random.Random(3))


# --- Ogg Opus encoding -------------------------------------------------------------------------

# Measured with espeak-ng speech (see the report): waveform SNR at exact alignment.
SNR_FLOOR_DB = {64000: 17.0, None: 6.5, 128000: 23.0}


@pytest.mark.parametrize("bitrate", [64000, None, 128000])
def test_round_trip_exact_length_and_alignment(speech48: Samples, bitrate: int | None) -> None:
    rng = random.Random(bitrate or 0)
    pcm = speech48.tobytes()
    enc = OggOpusEncoder(bitrate_bps=bitrate, serial=42)
    stream = enc.header() + b"".join(enc.encode(c) for c in _chunks(pcm, rng, 5000))
    stream += enc.finish()

    packets = OggPacketReader().feed(stream)
    audio = packets[2:]
    granules = [p.granule_position for p in audio[:-1]]
    assert granules == [960 * (i + 1) for i in range(len(audio) - 1)]
    assert audio[-1].eos and audio[-1].granule_position == enc.pre_skip + len(speech48)
    assert len(audio) == -(-(len(speech48) + enc.pre_skip) // 960)

    out = _decode_all(stream, rng)
    assert len(out) == len(speech48)
    snr = _snr_db(speech48, out)
    assert snr >= SNR_FLOOR_DB[bitrate]
    if bitrate is not None:  # CELT mode: pre-skip must put the peak at lag 0, not +-1
        assert snr > _snr_db(speech48[1:], out[:-1]) + 3
        assert snr > _snr_db(speech48[:-1], out[1:]) + 3


def test_opusdec_decodes_our_stream(speech48: Samples, tmp_path: Path) -> None:
    enc = OggOpusEncoder(bitrate_bps=64000)
    data = enc.header() + enc.encode(speech48.tobytes()) + enc.finish()
    path = tmp_path / "ours.opus"
    path.write_bytes(data)
    theirs = _opusdec(path)
    assert len(theirs) == len(speech48)
    assert _snr_db(theirs, _decode_all(data, random.Random(4))) >= 30.0


@pytest.mark.parametrize("n", [0, 1, 647, 648, 649, 959, 960, 961, 2 * 960 + 900])
def test_encoder_tail_lengths(speech48: Samples, n: int) -> None:
    x = speech48[20000 : 20000 + n]
    enc = OggOpusEncoder(serial=3)
    data = enc.header() + enc.encode(x.tobytes()) + enc.finish()
    audio = OggPacketReader().feed(data)[2:]
    assert len(audio) == -(-(n + enc.pre_skip) // 960)  # the lookahead tail is encoded too
    assert audio[-1].eos and audio[-1].granule_position == enc.pre_skip + n
    out = _decode_all(data, random.Random(n))
    assert len(out) == n
    if n > 900:
        assert _snr_db(x, out) > 5.0


def test_encoder_empty_and_odd_input() -> None:
    enc = OggOpusEncoder(serial=1)
    data = enc.header() + enc.finish()
    assert _decode_all(data, random.Random(5)).size == 0
    enc = OggOpusEncoder(serial=2)
    data = enc.header() + enc.encode(b"\x01\x02\x03") + enc.encode(bytes(1999)) + enc.finish()
    assert _decode_all(data, random.Random(6)).size == 1001  # 2001 bytes: the odd one dropped
    with pytest.raises(RuntimeError):
        enc.encode(b"\0\0")
    with pytest.raises(RuntimeError):
        OggOpusEncoder().encode(b"\0\0")


def test_decoder_applies_output_gain(speech48: Samples) -> None:
    enc = OggOpusEncoder(bitrate_bps=64000, serial=8)
    data = enc.header() + enc.encode(speech48.tobytes()) + enc.finish()
    packets = OggPacketReader().feed(data)
    head = bytearray(packets[0].data)
    struct.pack_into("<h", head, 16, -6 * 256)  # -6 dB in Q7.8
    writer = OggPageWriter(8)
    rebuilt = writer.page([bytes(head)], 0, bos=True)
    for p in packets[1:]:
        rebuilt += writer.page([p.data], p.granule_position or 0, eos=p.eos)
    plain = _decode_all(data, random.Random(7)).astype(np.float64)
    quiet = _decode_all(rebuilt, random.Random(7)).astype(np.float64)
    ratio = np.sqrt(np.sum(quiet**2) / np.sum(plain**2))
    assert ratio == pytest.approx(10 ** (-6 / 20), rel=1e-3)
