"""Home Assistant itself against the real daemon over MQTT, as a new user would set it up.

Home Assistant 2026.2.3 runs chrooted from the root ``scripts/ha-root`` builds (cached between
runs; harness/homeassistant.py); it is onboarded and given an MQTT entry on the test's
Mosquitto through its REST API, exactly the calls its frontend makes. The daemon, the local TTS
server and the ALSA file capture are the usual stack (tests/conftest.py). Every wait is on a real
condition (an entity's state in Home Assistant, an MQTT event or state message), bounded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgespeak import __version__
from tests.conftest import RunningHomeAssistant, Stack
from tests.test_homeassistant_live import (
    DOOR,
    SMOKE,
    STATE,
    assert_scaled,
    inbox,
    node_config,
    wait_state,
)

#: What Home Assistant makes of the node's discovery: entity id → friendly name.
ENTITIES = {
    "notify.edgespeak_testnode_announce": "edgespeak testnode Announce",
    "button.edgespeak_testnode_stop": "edgespeak testnode Stop",
    "button.edgespeak_testnode_test_chime": "edgespeak testnode Test chime",
    "number.edgespeak_testnode_volume": "edgespeak testnode Volume",
    "sensor.edgespeak_testnode_last_ttfa": "edgespeak testnode Last TTFA",
    "sensor.edgespeak_testnode_queue_length": "edgespeak testnode Queue length",
    "sensor.edgespeak_testnode_cache_entries": "edgespeak testnode Cache entries",
    "sensor.edgespeak_testnode_last_error": "edgespeak testnode Last error",
    "binary_sensor.edgespeak_testnode_speaking": "edgespeak testnode Speaking",
    "binary_sensor.edgespeak_testnode_provider": "edgespeak testnode TTS provider",
}
NOTIFY = "notify.edgespeak_testnode_announce"
VOLUME = "number.edgespeak_testnode_volume"
#: The loggers whose warnings and errors about our discovery would tell us it is wrong.
MQTT_LOGGERS = ("homeassistant.components.mqtt", "homeassistant.helpers.entity")


def ours(states: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The states of the node's entities (ids ``<domain>.edgespeak_testnode_…``), by entity id."""
    return {s["entity_id"]: s for s in states if ".edgespeak_testnode_" in s["entity_id"]}


def all_available(states: list[dict[str, Any]]) -> bool:
    """Every expected entity exists and is not ``unavailable`` (the availability topic read)."""
    found = ours(states)
    return all(e in found and found[e]["state"] != "unavailable" for e in ENTITIES)


async def set_up_mqtt(ha: RunningHomeAssistant, stack: Stack) -> dict[str, dict[str, Any]]:
    """Add Home Assistant's MQTT entry on the stack's broker (the daemon already runs); return
    our entities' states once all of them are there and available."""
    entry = await ha.api.add_entry("mqtt", {"broker": "127.0.0.1", "port": stack.broker.port})
    assert entry["result"]["state"] == "loaded", entry
    return ours(await ha.api.wait_states(all_available))


def config(stack: Stack) -> Path:
    return node_config(stack)


async def test_home_assistant_discovers_the_ten_entities_of_the_node(
    stack: Stack, home_assistant: RunningHomeAssistant
) -> None:
    async with stack.daemon(config(stack)):
        found = await set_up_mqtt(home_assistant, stack)
    names = {entity_id: s["attributes"].get("friendly_name") for entity_id, s in found.items()}
    assert names == ENTITIES
    state = {entity_id: s["state"] for entity_id, s in found.items()}
    assert state[VOLUME] == "100"
    assert state["binary_sensor.edgespeak_testnode_speaking"] == "off"
    assert state["binary_sensor.edgespeak_testnode_provider"] == "on"
    assert state["sensor.edgespeak_testnode_queue_length"] == "0"
    assert state["sensor.edgespeak_testnode_last_error"] == "unknown"  # null → None → unknown
    assert found[VOLUME]["attributes"] | {"friendly_name": None} == {
        "min": 0, "max": 100, "step": 1, "mode": "slider", "unit_of_measurement": "%",
        "icon": "mdi:volume-high", "friendly_name": None,
    }  # fmt: skip
    devices = await home_assistant.api.websocket("config/device_registry/list")
    device = next(d for d in devices if ["mqtt", "edgespeak_testnode"] in d["identifiers"])
    assert (device["name"], device["manufacturer"], device["model"], device["sw_version"]) == (
        "edgespeak testnode", "edgespeak", "MQTT speech daemon", __version__,
    )  # fmt: skip
    # Home Assistant finds nothing to complain about: no warnings, no repair issues.
    assert home_assistant.process.problems(*MQTT_LOGGERS) == []
    issues = (await home_assistant.api.websocket("repairs/list_issues"))["issues"]
    assert [i for i in issues if i["domain"] == "mqtt" or i["issue_domain"] == "mqtt"] == []


async def test_notify_send_message_is_spoken(
    stack: Stack, home_assistant: RunningHomeAssistant
) -> None:
    async with stack.daemon(config(stack)) as w:
        await set_up_mqtt(home_assistant, stack)
        mark = len(w.events)
        await home_assistant.api.call(
            "notify", "send_message", {"entity_id": NOTIFY, "message": DOOR}
        )
        received = await w.wait("received", after=mark)
        plain = await w.wait("finished", "failed", ann_id=received["id"])
        spoken = stack.capture.read()
        # A JSON message keeps its options (the command template passes it through).
        options = {"text": SMOKE, "priority": "critical", "volume": 0.5, "id": "ha-smoke"}
        await home_assistant.api.call(
            "notify", "send_message", {"entity_id": NOTIFY, "message": json.dumps(options)}
        )
        smoke = await w.wait("finished", "failed", ann_id="ha-smoke")
    assert plain["state"] == "finished" and plain["source"] == "stream", plain
    assert spoken == await stack.sent(DOOR)
    assert smoke["state"] == "finished", smoke
    assert_scaled(stack.capture.read()[len(spoken) :], await stack.sent(SMOKE), 0.5)
    assert home_assistant.process.problems(*MQTT_LOGGERS) == []


async def test_the_volume_number_sets_the_daemons_volume(
    stack: Stack, home_assistant: RunningHomeAssistant
) -> None:
    async with stack.daemon(config(stack)) as w, inbox(stack.broker.port, STATE) as box:
        await set_up_mqtt(home_assistant, stack)
        start = len(box.messages)
        await home_assistant.api.call("number", "set_value", {"entity_id": VOLUME, "value": 40})
        shown = box.messages[await wait_state(box, lambda s: s["volume"] == 40, start)].json()
        number = await home_assistant.api.wait_state(VOLUME, lambda s: s["state"] == "40")
        mark = len(w.events)
        await home_assistant.api.call(
            "notify", "send_message", {"entity_id": NOTIFY, "message": DOOR}
        )
        received = await w.wait("received", after=mark)
        done = await w.wait("finished", "failed", ann_id=received["id"])
    assert shown["volume"] == 40 and shown["last_error"] is None
    assert number["state"] == "40"
    assert done["state"] == "finished", done
    assert_scaled(stack.capture.read(), await stack.sent(DOOR), 0.4)
    assert (stack.workdir / "state" / "volume").read_text() == "0.4000\n"
    assert home_assistant.process.problems(*MQTT_LOGGERS) == []
