"""The relay's wire format and codec (group/relay.py): real libopus, real soxr."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgespeak.group.inbox import MAX_STREAMS, RelayGap, RelayInbox
from edgespeak.group.relay import (
    HEADER,
    Message,
    RelayDecoder,
    RelayEncoder,
    RelayError,
    lookahead,
    opus_rate,
)
from tests.helpers import espeak_pcm


def tone(rate_hz: int, seconds: float) -> bytes:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return (np.sin(2 * np.pi * 330 * t) * 6000 * np.exp(-t)).astype("<i2").tobytes()


def relay(pcm: bytes, rate_hz: int, chunk: int = 4410) -> list[bytes]:
    encoder = RelayEncoder(rate_hz)
    messages = []
    for i in range(0, len(pcm), chunk):
        messages += encoder.feed(pcm[i : i + chunk])
    return messages + encoder.finish()


@pytest.mark.parametrize("rate_hz", [22050, 24000, 44100, 48000, 16000])
def test_the_decoded_relay_has_every_frame_lined_up_with_the_input(rate_hz: int) -> None:
    pcm = tone(rate_hz, 1.3)
    messages = relay(pcm, rate_hz)
    decoder = RelayDecoder(rate_hz)
    out = b"".join(decoder.feed(m) for m in messages)
    assert decoder.ended and not decoder.aborted
    assert len(out) == len(pcm)  # the END's frame count: padding and lookahead trimmed
    sent = np.frombuffer(pcm, "<i2").astype(float)
    got = np.frombuffer(out, "<i2").astype(float)
    # Lined up: the error is Opus's coding noise, far below the signal (a shift by the
    # encoder's lookahead, 6.5 ms, would leave an error as loud as the tone itself).
    assert np.sqrt(np.mean((sent - got) ** 2)) < 0.15 * np.sqrt(np.mean(sent**2))


def test_every_decoder_gives_the_same_bytes_for_the_same_messages() -> None:
    # Decoded and resampled one message at a time: soxr's int16 output is not the same from
    # one stream to the next (checked with edgespeak.audio.resample.Resampler in the relay:
    # 6 decoders of this phrase gave 3 or 4 different results), so nodes would not have
    # played the same bytes. The relay resamples in float32 and rounds itself.
    text = "The washing machine has finished. Please empty it before the clothes start to smell."
    messages = relay(espeak_pcm(text), 22050)
    outputs = set()
    for _ in range(6):
        decoder = RelayDecoder(22050)
        outputs.add(b"".join(decoder.feed(m) for m in messages))
    assert len(outputs) == 1


def test_messages_carry_three_20_ms_packets_and_a_header() -> None:
    messages = relay(tone(24000, 1.0), 24000)
    parsed = [Message.from_bytes(m) for m in messages]
    assert [m.seq for m in parsed] == list(range(len(parsed)))
    assert all(len(m.packets) == 3 for m in parsed[:-1])
    assert [m.end for m in parsed] == [False] * (len(parsed) - 1) + [True]
    assert parsed[-1].granule == 24000  # the total frame count
    assert all(a.granule <= b.granule for a, b in itertools.pairwise(parsed))
    # 1 s of speech fits in 17 messages of about 200 bytes: 24 kbit/s plus headers.
    assert sum(map(len, messages)) < 4000
    assert opus_rate(24000) == 24000 and opus_rate(22050) == 48000
    assert lookahead(48000) > 0


def test_a_message_out_of_sequence_is_refused() -> None:
    messages = relay(tone(24000, 0.5), 24000)
    decoder = RelayDecoder(24000)
    decoder.feed(messages[0])
    with pytest.raises(RelayError, match="relay message 2 where 1 was due"):
        decoder.feed(messages[2])


@pytest.mark.parametrize(
    "data",
    [b"short", HEADER.pack(0, 0, 0, 0) + b"\x00", HEADER.pack(0, 0, 0, 0) + b"\x00\x09abc"],
)
def test_a_malformed_message_is_refused(data: bytes) -> None:
    with pytest.raises(RelayError):
        RelayDecoder(24000).feed(data)


def test_an_abort_ends_the_relay_without_trimming_to_a_count() -> None:
    pcm = tone(24000, 1.0)
    encoder = RelayEncoder(24000)
    messages = encoder.feed(pcm[: len(pcm) // 2])
    messages.append(encoder.abort())
    decoder = RelayDecoder(24000)
    out = b"".join(decoder.feed(m) for m in messages)
    assert decoder.ended and decoder.aborted
    assert 0 < len(out) <= len(pcm) // 2
    with pytest.raises(RelayError, match="after the END"):
        decoder.feed(messages[0])


async def test_the_inbox_keeps_a_bounded_number_of_streams() -> None:
    inbox = RelayInbox()
    first = Message(0, 0, False, (b"x",)).to_bytes()
    for n in range(MAX_STREAMS + 5):
        inbox.add(f"key-{n}", first, arrived=1.0)
    got = await _read_one(inbox, f"key-{MAX_STREAMS + 4}")
    assert got == [first]
    with pytest.raises(RelayGap):  # the oldest stream was dropped for the newest
        async for _ in inbox.read("key-0", gap_s=0.01, gone=lambda: None):
            pass


async def _read_one(inbox: RelayInbox, key: str) -> list[bytes]:
    reader = inbox.read(key, gap_s=1.0, gone=lambda: None)
    try:
        return [await anext(reader)]
    finally:
        await reader.aclose()
