"""Home Assistant's entities at work against the real daemon over Mosquitto: notify messages
rendered as Home Assistant renders them, the volume number, the test-chime button, the speaking
state and group topics (discovery and availability: tests/test_homeassistant_live.py)."""

from __future__ import annotations

import json
from typing import Any

import aiomqtt

from edgespeak.speaking.chimes import Chimes
from tests.conftest import Stack, Watcher, daemon_process, watching
from tests.test_homeassistant import render_command, render_value
from tests.test_homeassistant_live import (
    ANNOUNCE,
    CHIME,
    DOOR,
    DOWNSTAIRS,
    EVERYONE,
    RATE,
    SMOKE,
    STATE,
    UPSTAIRS,
    VOLUME_SET,
    WASHER,
    assert_scaled,
    discovery_on_broker,
    entity,
    inbox,
    is_state,
    no_env_overrides,  # noqa: F401  (autouse fixture)
    node_config,
    retained,
    tone,
    wait_state,
    wav_file,
)
from tests.test_scheduler import HOLD, held_provider, send


async def notify(client: aiomqtt.Client, entity: dict[str, Any], message: str) -> None:
    """What Home Assistant's MQTT notify does with ``message``: render the command template
    and publish the result on the command topic with the entity's qos and retain."""
    rendered = render_command(entity["command_template"], message)
    await client.publish(
        entity["command_topic"], rendered.encode(), qos=entity["qos"], retain=entity["retain"]
    )


async def test_notify_messages_rendered_like_home_assistant_are_spoken_with_their_options(
    stack: Stack,
) -> None:
    config = node_config(stack)
    async with stack.daemon(config) as w:
        discovered = await discovery_on_broker(stack.broker.port)
        topic = "homeassistant/notify/testnode/edgespeak_testnode_announce/config"
        entity = discovered[topic].json()
        options = {"text": SMOKE, "priority": "critical", "volume": 0.5, "id": "n-1"}
        await notify(w.client, entity, json.dumps(options))
        smoke = await w.wait("finished", "failed", ann_id="n-1")
        halved = stack.capture.read()
        mark = len(w.events)
        await notify(w.client, entity, WASHER)  # plain text: wrapped as {"text": ...}
        received = await w.wait("received", after=mark)
        plain = await w.wait("finished", "failed", ann_id=received["id"])
    assert entity["command_topic"] == ANNOUNCE
    assert smoke["state"] == "finished" and smoke["source"] == "stream", smoke
    assert_scaled(halved, await stack.sent(SMOKE), 0.5)
    assert plain["state"] == "finished", plain
    assert stack.capture.read()[len(halved) :] == await stack.sent(WASHER)


async def test_volume_set_is_applied_shown_and_kept_across_restarts(stack: Stack) -> None:
    config = node_config(stack)
    port = stack.broker.port
    number = entity(config, "number", "volume")
    assert number["command_topic"] == VOLUME_SET
    async with stack.daemon(config) as w, inbox(port, STATE) as box:
        first = box.messages[await box.wait_for(is_state)].json()
        await box.publish(VOLUME_SET, b"40")
        at = await wait_state(box, lambda s: s["volume"] == 40)
        done = await w.say(DOOR, "vol-1")
    assert first["volume"] == 100
    assert render_value(number["value_template"], box.messages[at].payload.decode()) == "40"
    assert done["state"] == "finished", done
    assert_scaled(stack.capture.read(), await stack.sent(DOOR), 0.4)
    stored = stack.workdir / "state" / "volume"
    assert stored.read_text() == "0.4000\n"

    # Restart: the volume must come from the state dir, not from the retained state.
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.publish(STATE, b"", qos=1, retain=True)
    assert await retained(port, STATE) == []
    stack.capture.path.unlink()
    async with inbox(port, STATE) as box:
        with daemon_process(config, stack.capture, stack.workdir):
            async with watching(port) as w:
                shown_at = await box.wait_for(is_state)
                await box.publish(VOLUME_SET, b"loud")
                bad_at = await wait_state(box, lambda s: s["last_error"] is not None, shown_at)
                again = await w.say(WASHER, "vol-2")
    shown, bad = box.messages[shown_at].json(), box.messages[bad_at].json()
    assert shown["volume"] == 40 and shown["last_error"] is None
    assert "volume" in bad["last_error"] and "'loud'" in bad["last_error"]
    unchanged = ("state", "volume", "queue", "cache_entries", "last_ttfa_ms")
    assert {k: bad[k] for k in unchanged} == {k: shown[k] for k in unchanged}
    assert stored.read_text() == "0.4000\n"
    assert again["state"] == "finished", again
    assert_scaled(stack.capture.read(), await stack.sent(WASHER), 0.4)


async def press(w: Watcher, topic: str, payload: bytes) -> dict[str, Any]:
    mark = len(w.events)
    await w.client.publish(topic, payload, qos=1)
    return await w.wait("finished", "failed", after=mark)


async def test_test_chime_button_plays_the_chime_alone(stack: Stack) -> None:
    sounds = stack.workdir / "sounds"
    sounds.mkdir()
    ding = tone(RATE, 0.2, 880)
    (sounds / "ding.wav").write_bytes(wav_file(ding, RATE))
    config = node_config(stack, f'[sounds]\ndir = "{sounds}"\ndefault_chime = "ding"\n')
    async with stack.daemon(config) as w:
        discovered = await discovery_on_broker(stack.broker.port)
        topic = "homeassistant/button/testnode/edgespeak_testnode_test_chime/config"
        button = discovered[topic].json()
        doorbell = await press(w, CHIME, b"doorbell")
        after_doorbell = stack.capture.read()
        pressed = await press(w, button["command_topic"], button["payload_press"].encode())
        empty = await press(w, CHIME, b"")  # no name: [sounds] default_chime
        unknown = await press(w, CHIME, b"gong")
    built_in = Chimes(None).pcm("doorbell", RATE)
    assert (button["command_topic"], button["payload_press"]) == (CHIME, "ding")
    assert (doorbell["state"], doorbell["source"]) == ("finished", "sound"), doorbell
    assert doorbell["duration_s"] == round(len(built_in) / 2 / RATE, 3)
    assert after_doorbell == built_in
    for event in (pressed, empty):
        assert (event["state"], event["source"]) == ("finished", "sound"), event
        assert event["duration_s"] == 0.2
    assert len({doorbell["id"], pressed["id"], empty["id"], unknown["id"]}) == 4
    assert unknown["state"] == "failed"
    assert "unknown chime 'gong'" in unknown["error"]
    assert "ding" in unknown["error"] and "doorbell" in unknown["error"]  # what there is
    assert stack.capture.read() == built_in + ding + ding  # nothing for the unknown one


async def test_state_shows_speaking_with_its_queue_then_idle(stack: Stack) -> None:
    async with held_provider() as provider:
        config = node_config(stack, tts_url=provider.url)
        speaking = entity(config, "binary_sensor", "speaking")
        queue = entity(config, "sensor", "queue_length")
        async with stack.daemon(config) as w, inbox(stack.broker.port, STATE) as box:
            idle = await wait_state(box, lambda s: s["state"] == "idle")
            await send(w, HOLD, "hold-1")
            talking = await wait_state(
                box, lambda s: (s["state"], s["queue"]) == ("speaking", 0), idle
            )
            await send(w, DOOR, "door-1")
            waiting = await wait_state(box, lambda s: s["queue"] == 1, talking)
            provider.release.set()
            await w.wait("finished", ann_id="door-1")
            done = await wait_state(box, lambda s: (s["state"], s["queue"]) == ("idle", 0), waiting)
    shown = [(s["state"], s["queue"]) for s in (m.json() for m in box.messages if is_state(m))]
    assert shown[0] == ("idle", 0)
    assert box.messages[waiting].json()["state"] == "speaking"
    # Between the two the door announcement plays: speaking with nothing waiting.
    assert ("speaking", 0) in shown[shown.index(("speaking", 1)) :]
    assert shown[-1] == ("idle", 0)
    assert w.states("hold-1")[-1] == "finished" and w.states("door-1")[-1] == "finished"
    # Home Assistant's view of the same messages.
    while_waiting = box.messages[waiting].payload.decode()
    assert render_value(speaking["value_template"], while_waiting) == "ON"
    assert render_value(queue["value_template"], while_waiting) == "1"
    last = box.messages[done].json()
    assert render_value(speaking["value_template"], json.dumps(last)) == "OFF"
    assert isinstance(last["last_ttfa_ms"], float) and 0 < last["last_ttfa_ms"] < 10_000


async def test_group_announcements_only_for_the_nodes_groups(stack: Stack) -> None:
    config = node_config(stack, mqtt={"groups": ["downstairs"]})
    async with stack.daemon(config) as w:
        for topic, text, ann_id in [
            ("edgespeak/group/downstairs/announce", DOWNSTAIRS, "g-down"),
            ("edgespeak/group/upstairs/announce", UPSTAIRS, "g-up"),
            ("edgespeak/all/announce", EVERYONE, "g-all"),
            (ANNOUNCE, DOOR, "g-own"),  # the barrier: after it, nothing is still on its way
        ]:
            await w.client.publish(topic, json.dumps({"text": text, "id": ann_id}), qos=1)
        own = await w.wait("finished", "failed", ann_id="g-own")
    assert own["state"] == "finished", own
    assert w.states("g-down")[-1] == "finished" and w.states("g-all")[-1] == "finished"
    assert w.states("g-up") == []
    assert [e["id"] for e in w.events if e["state"] == "finished"] == ["g-down", "g-all", "g-own"]
    expected = [await stack.sent(text) for text in (DOWNSTAIRS, EVERYONE, DOOR)]
    assert stack.capture.read() == b"".join(expected)


async def test_cache_entries_follow_the_phrases_stored_once_the_node_is_idle(
    stack: Stack,
) -> None:
    """The entry count is read again once nothing plays or waits (not as each announcement
    arrives): each new phrase spoken shows up in the state, a phrase said again does not."""
    config = node_config(stack)
    async with stack.daemon(config) as w, inbox(stack.broker.port, STATE) as box:
        first = await wait_state(box, lambda s: s["state"] == "idle")
        assert box.messages[first].json()["cache_entries"] == 0
        counts = []
        for n, text in enumerate((DOOR, WASHER, DOOR)):
            done = await w.say(text, f"count-{n}")
            assert done["state"] == "finished", done
            at = await wait_state(box, lambda s: s["state"] == "idle", first + 1)
            counts.append(box.messages[at].json()["cache_entries"])
            first = at
    assert counts == [1, 2, 2]
