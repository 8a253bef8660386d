"""Playback options end to end: per-announcement volume and lead-in, faded interruption."""

from __future__ import annotations

import json

import numpy as np

from edgespeak.speaking.chimes import Chimes
from tests.conftest import Stack
from tests.test_scheduler import DOOR, HOLD, held_provider, send


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int32)


async def test_volume_and_lead_in_from_the_payload(stack: Stack) -> None:
    async with stack.daemon() as w:
        await w.announce(json.dumps({"text": DOOR, "id": "v-1", "volume": 0.5, "lead_in_ms": 100}))
        done = await w.wait("finished", "failed", ann_id="v-1")
    assert done["state"] == "finished", done
    played = samples(stack.capture.read())
    source = samples(await stack.sent(DOOR))
    lead_in = 2205  # 100 ms at 22050 Hz
    assert len(played) == lead_in + len(source)
    assert not played[:lead_in].any()
    speech = played[lead_in:]
    assert np.max(np.abs(speech - source / 2)) <= 1  # halved, rounded
    assert np.max(np.abs(source)) > 1000  # real speech, not silence


async def test_an_interrupted_announcement_fades_out_then_the_interrupter_plays(
    stack: Stack,
) -> None:
    async with held_provider() as provider:
        config = stack.config(tts_url=provider.url, fade_ms=8)
        async with stack.daemon(config) as w:
            await send(w, HOLD, "weather")
            await w.wait("playing", ann_id="weather")
            await send(w, DOOR, "door", priority="high")
            await w.wait("finished", ann_id="door")
            await w.wait("interrupted", ann_id="weather")
    played = samples(stack.capture.read())
    door = samples(await stack.sent(DOOR))
    cut = len(played) - len(door)
    weather = played[:cut]
    # The weather report stops on a ramp to silence, not mid-waveform.
    assert weather[-1] == 0
    tail = np.abs(weather[-176:])  # its last 8 ms
    assert tail.max() < 32767 and tail[-20:].max() <= tail[:20].max()
    # The door announcement follows complete (its own fades only touch near-silent edges).
    assert np.max(np.abs(played[cut:] - door)) <= 1


async def test_speech_follows_its_chime_without_a_gap(paced_stack: Stack) -> None:
    stack = paced_stack
    config = stack.config(keep_open_s=0.5)  # a late speech would show as silence
    async with stack.daemon(config) as w:
        await w.announce(
            json.dumps({"text": DOOR, "id": "c-1", "chime": "doorbell", "lead_in_ms": 50})
        )
        done = await w.wait("finished", "failed", ann_id="c-1")
        playing = await w.wait("playing", ann_id="c-1")
    assert done["state"] == "finished", done
    assert done["chime_gap_ms"] == 0
    chime = Chimes(None).pcm("doorbell", 22050)
    speech = await stack.sent(DOOR)
    lead = bytes(1102 * 2)  # 50 ms at 22050 Hz, before the chime only
    played = stack.capture.read()
    expected = lead + chime + speech
    assert played[: len(expected)] == expected
    assert not any(played[len(expected) :])  # then keep-open silence
    assert playing["ttfa_ms"] < done["ttfa_ms"] + 1  # measured to the chime's first frame


async def test_an_unknown_chime_is_skipped_with_a_warning(stack: Stack) -> None:
    async with stack.daemon() as w:
        await w.announce(json.dumps({"text": DOOR, "id": "c-2", "chime": "gong"}))
        done = await w.wait("finished", "failed", ann_id="c-2")
    assert done["state"] == "finished", done
    assert "unknown chime 'gong'" in done["warning"] and "doorbell" in done["warning"]
    assert "chime_gap_ms" not in done
    assert stack.capture.read() == await stack.sent(DOOR)
