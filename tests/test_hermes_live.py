"""Rhasspy Hermes against the real daemon: ``hermes/tts/say`` → speech → ``sayFinished``, and
``playBytes`` WAVs → ALSA → ``playFinished``.

Real Mosquitto, real ``edgespeak run``, the real local TTS server and ALSA file capture
(tests/conftest.py); Rhasspy's side is an MQTT client of the test publishing what
rhasspy-hermes publishes (message shapes: tests/test_hermes.py). "Not spoken, not answered"
is checked up to a later request of our site that is answered after it.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import Stack
from tests.test_homeassistant_live import assert_scaled, inbox, node_config, tone, wav_file

SITE = "kitchen"
SAY = "hermes/tts/say"
SAY_FINISHED = "hermes/tts/sayFinished"
PLAY_BYTES = f"hermes/audioServer/{SITE}/playBytes"
PLAY_FINISHED = f"hermes/audioServer/{SITE}/playFinished"
HERMES = f'[hermes]\nenabled = true\nsite_id = "{SITE}"\n'

DOOR = "Someone is at the front door."
BEDROOM = "The bedroom lights are off."
WASHER = "The washing machine has finished. Please empty it."


@pytest.fixture(autouse=True)
def no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("EDGESPEAK_"):
            monkeypatch.delenv(name)


async def test_say_for_our_site_is_spoken_and_answered(stack: Stack) -> None:
    config = node_config(stack, HERMES)
    async with stack.daemon(config) as w, inbox(stack.broker.port, "hermes/#") as box:
        say = {"text": DOOR, "siteId": SITE, "id": "h-1", "sessionId": "s-1", "volume": 0.5}
        await box.publish(SAY, json.dumps(say))
        first = await box.wait_for(lambda m: m.topic == SAY_FINISHED)
        halved = stack.capture.read()
        # Another site's say, then ours: answered alone, so the bedroom one was dropped.
        bedroom = {"text": BEDROOM, "siteId": "bedroom", "id": "h-2", "sessionId": "s-2"}
        await box.publish(SAY, json.dumps(bedroom))
        await box.publish(SAY, json.dumps({"text": WASHER, "siteId": SITE, "id": "h-3"}))
        second = await box.wait_for(lambda m: m.topic == SAY_FINISHED, after=first + 1)
        spoken = await w.wait("finished", "failed", ann_id="h-1")
    assert box.messages[first].json() == {"siteId": SITE, "id": "h-1", "sessionId": "s-1"}
    assert box.messages[second].json() == {"siteId": SITE, "id": "h-3", "sessionId": None}
    assert spoken["state"] == "finished" and spoken["source"] == "stream", spoken
    assert w.states("h-3")[-1] == "finished"
    assert w.states("h-2") == []
    assert_scaled(halved, await stack.sent(DOOR), 0.5)
    assert stack.capture.read()[len(halved) :] == await stack.sent(WASHER)


async def test_a_say_with_nothing_to_speak_is_answered(stack: Stack) -> None:
    """A say for our site with an empty text (and one another site's) fails, and ours is
    answered with sayFinished at once: Rhasspy's dialogue manager waits for it."""
    config = node_config(stack, HERMES)
    async with stack.daemon(config) as w, inbox(stack.broker.port, "hermes/#") as box:
        other = {"text": "", "siteId": "bedroom", "id": "h-8", "sessionId": "s-8"}
        await box.publish(SAY, json.dumps(other))
        await box.publish(SAY, json.dumps({"text": " ", "siteId": SITE, "id": "h-9",
                                           "sessionId": "s-9"}))  # fmt: skip
        answered = await box.wait_for(lambda m: m.topic == SAY_FINISHED)
        failed = await w.wait("finished", "failed", ann_id="h-9")
    assert box.messages[answered].json() == {"siteId": SITE, "id": "h-9", "sessionId": "s-9"}
    assert [m.json()["id"] for m in box.messages if m.topic == SAY_FINISHED] == ["h-9"]
    assert failed["state"] == "failed" and "'text' is empty" in failed["error"], failed
    assert w.states("h-8") == []


async def test_play_bytes_plays_the_wav_and_answers_even_when_it_is_garbage(stack: Stack) -> None:
    pcm = tone(16000, 0.3, 440)
    config = node_config(stack, HERMES)
    async with stack.daemon(config) as w, inbox(stack.broker.port, "hermes/#") as box:
        await box.publish("hermes/audioServer/bedroom/playBytes/req-0", wav_file(pcm, 16000))
        await box.publish(f"{PLAY_BYTES}/req-1", wav_file(pcm, 16000))
        first = await box.wait_for(lambda m: m.topic == PLAY_FINISHED)
        played = await w.wait("finished", "failed", ann_id="req-1")
        await box.publish(f"{PLAY_BYTES}/req-2", b"RIFF? no, just some bytes")
        second = await box.wait_for(lambda m: m.topic == PLAY_FINISHED, after=first + 1)
        failed = await w.wait("finished", "failed", ann_id="req-2")
    assert box.messages[first].json() == {"id": "req-1", "siteId": SITE, "sessionId": "req-1"}
    assert box.messages[second].json() == {"id": "req-2", "siteId": SITE, "sessionId": "req-2"}
    assert (played["state"], played["source"]) == ("finished", "sound"), played
    assert played["duration_s"] == 0.3
    assert stack.capture.read() == pcm  # at the WAV's own rate (16 kHz, speech is 22.05), as is
    assert failed["state"] == "failed"
    assert "req-2" in failed["error"] and "not a playable WAV" in failed["error"]
    assert w.states("req-0") == []
    answered = [m.json()["id"] for m in box.messages if m.topic.endswith("/playFinished")]
    assert answered == ["req-1", "req-2"]  # once each, none for the bedroom
