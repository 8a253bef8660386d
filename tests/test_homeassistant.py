"""Home Assistant discovery payloads, checked against what Home Assistant documents and does.

Key sets below are copied from Home Assistant's documentation (configuration variables of each
MQTT platform page, and the MQTT discovery page for ``origin``/``default_entity_id``); templates
are rendered with real Jinja2 the way Home Assistant's MQTT integration renders them.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edgespeak import __version__
from edgespeak.config import HomeAssistantConfig, MqttConfig, Settings, SoundsConfig
from edgespeak.inlets.homeassistant import discovery as homeassistant
from edgespeak.inlets.mqtt.topics import Topics

# ---------------------------------------------------------------------------------------------
# What Home Assistant documents, per platform.
#
# Options every MQTT entity platform documents (availability, device, entity registry options),
# e.g. https://www.home-assistant.io/integrations/sensor.mqtt/#configuration-variables.
# ``origin`` is documented for every discovery payload on
# https://www.home-assistant.io/integrations/mqtt/#discovery-payload ("Adding information about
# the origin of a discovery message"); ``default_entity_id`` replaced ``object_id`` in Home
# Assistant 2025.10 (object_id is ignored from 2026.4), documented on each platform page.
# ``platform`` is left out on purpose: the pages say it is "only allowed and required in MQTT
# auto discovery device messages", and these are single-component messages.
COMMON_KEYS = {
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "default_entity_id",
    "device",
    "enabled_by_default",
    "encoding",
    "entity_category",
    "entity_picture",
    "icon",
    "json_attributes_template",
    "json_attributes_topic",
    "name",
    "object_id",
    "origin",
    "payload_available",
    "payload_not_available",
    "qos",
    "unique_id",
}
# platform: (required, allowed besides COMMON_KEYS)
PLATFORM_KEYS: dict[str, tuple[set[str], set[str]]] = {
    # https://www.home-assistant.io/integrations/notify.mqtt/
    "notify": ({"command_topic"}, {"command_template", "command_topic", "retain"}),
    # https://www.home-assistant.io/integrations/button.mqtt/
    "button": (
        {"command_topic"},
        {"command_template", "command_topic", "device_class", "payload_press", "retain"},
    ),
    # https://www.home-assistant.io/integrations/number.mqtt/
    "number": (
        {"command_topic"},
        {
            "command_template",
            "command_topic",
            "device_class",
            "max",
            "min",
            "mode",
            "optimistic",
            "payload_reset",
            "retain",
            "state_topic",
            "step",
            "unit_of_measurement",
            "value_template",
        },
    ),
    # https://www.home-assistant.io/integrations/sensor.mqtt/
    "sensor": (
        {"state_topic"},
        {
            "device_class",
            "expire_after",
            "force_update",
            "last_reset_value_template",
            "options",
            "state_class",
            "state_topic",
            "suggested_display_precision",
            "unit_of_measurement",
            "value_template",
        },
    ),
    # https://www.home-assistant.io/integrations/binary_sensor.mqtt/
    "binary_sensor": (
        {"state_topic"},
        {
            "device_class",
            "expire_after",
            "force_update",
            "off_delay",
            "payload_off",
            "payload_on",
            "state_topic",
            "value_template",
        },
    ),
}
# The ``device`` map's keys (same platform pages) and the ``origin`` map's (MQTT discovery page).
DEVICE_KEYS = {
    "configuration_url",
    "connections",
    "hw_version",
    "identifiers",
    "manufacturer",
    "model",
    "model_id",
    "name",
    "serial_number",
    "suggested_area",
    "sw_version",
    "via_device",
}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
# Discovery topic levels: "must only consist of characters from the character class
# [a-zA-Z0-9_-]" (https://www.home-assistant.io/integrations/mqtt/#discovery-topic).
TOPIC_ID = re.compile(r"[a-zA-Z0-9_-]+")
ENTITY_OBJECT_ID = re.compile(r"[a-z0-9_]+")

SAMPLE_STATE = {
    "state": "speaking",
    "volume": 42,
    "queue": 3,
    "cache_entries": 17,
    "provider_reachable": True,
    "last_ttfa_ms": 351.25,
    "last_error": "provider closed the connection",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No EDGESPEAK_* variable of the developer's shell leaks into Settings()."""
    for name in list(os.environ):
        if name.startswith("EDGESPEAK_"):
            monkeypatch.delenv(name)


def node(settings: Settings) -> Topics:
    return Topics.from_settings(settings)


def payloads(settings: Settings) -> dict[str, dict[str, Any]]:
    """Discovery topic → decoded payload (topics must be unique to fit)."""
    messages = homeassistant.discovery_messages(settings, node(settings), version=__version__)
    decoded = {topic: json.loads(payload.decode("utf-8")) for topic, payload in messages}
    assert len(decoded) == len(messages), "duplicate discovery topics"
    return decoded


def entity(settings: Settings, component: str, key: str) -> dict[str, Any]:
    for topic, config in payloads(settings).items():
        if topic.split("/")[1] == component and config["unique_id"].endswith(f"_{key}"):
            return config
    raise AssertionError(f"no {component} {key}")


# --- Home Assistant's template rendering -----------------------------------------------------
# Home Assistant renders templates in an ImmutableSandboxedEnvironment, with Jinja's own
# ``tojson`` and its own ``from_json`` (json loads); the rendered text is stripped. Command
# templates get the outgoing value as ``value``; value templates get the payload as ``value``
# and its JSON as ``value_json`` (https://www.home-assistant.io/docs/configuration/templating/).
HA_JINJA = ImmutableSandboxedEnvironment()
HA_JINJA.filters["from_json"] = json.loads


def render_command(template: str, value: Any) -> str:
    return HA_JINJA.from_string(template).render(value=value).strip()


def render_value(template: str, payload: str) -> str:
    variables: dict[str, Any] = {"value": payload}
    try:
        variables["value_json"] = json.loads(payload)
    except ValueError:
        pass
    return HA_JINJA.from_string(template).render(**variables).strip()


# --- payload shape -----------------------------------------------------------------------------


def test_kitchen_gets_every_entity_under_the_discovery_prefix() -> None:
    topics = list(payloads(Settings(node_id="kitchen")))
    assert topics == [
        "homeassistant/notify/kitchen/edgespeak_kitchen_announce/config",
        "homeassistant/button/kitchen/edgespeak_kitchen_stop/config",
        "homeassistant/button/kitchen/edgespeak_kitchen_test_chime/config",
        "homeassistant/number/kitchen/edgespeak_kitchen_volume/config",
        "homeassistant/sensor/kitchen/edgespeak_kitchen_last_ttfa/config",
        "homeassistant/sensor/kitchen/edgespeak_kitchen_queue_length/config",
        "homeassistant/sensor/kitchen/edgespeak_kitchen_cache_entries/config",
        "homeassistant/sensor/kitchen/edgespeak_kitchen_last_error/config",
        "homeassistant/binary_sensor/kitchen/edgespeak_kitchen_speaking/config",
        "homeassistant/binary_sensor/kitchen/edgespeak_kitchen_provider/config",
    ]


@pytest.mark.parametrize(
    "options",
    [
        {"node_id": "kitchen"},
        {
            "node_id": "attic-2",
            "mqtt": MqttConfig(prefix="house/speech", groups=("upstairs",)),
            "homeassistant": HomeAssistantConfig(discovery_prefix="ha_disco"),
        },
    ],
    ids=["default", "custom"],
)
def test_every_payload_uses_only_documented_keys(options: dict[str, Any]) -> None:
    settings = Settings(**options)
    seen_platforms = set()
    for topic, config in payloads(settings).items():
        prefix, component, node_id, object_id, last = topic.split("/")
        assert (prefix, node_id, last) == (
            settings.homeassistant.discovery_prefix,
            settings.node_id,
            "config",
        )
        assert TOPIC_ID.fullmatch(node_id) and TOPIC_ID.fullmatch(object_id), topic
        assert object_id == config["unique_id"]
        required, allowed = PLATFORM_KEYS[component]
        seen_platforms.add(component)
        assert required <= set(config), f"{topic} lacks {required - set(config)}"
        unknown = set(config) - COMMON_KEYS - allowed
        assert not unknown, f"{topic}: keys Home Assistant does not document: {unknown}"
        assert set(config["device"]) <= DEVICE_KEYS
        assert set(config["origin"]) <= ORIGIN_KEYS and config["origin"]["name"] == "edgespeak"
        assert config.get("entity_category") in (None, "config", "diagnostic")
        if component in ("sensor", "binary_sensor"):  # "must be diagnostic for sensors"
            assert config.get("entity_category") in (None, "diagnostic")
        for key, value in config.items():
            if key.endswith("_topic"):
                assert value and not set(value) & {"+", "#"} and not value.startswith("/")
                assert not value.startswith(settings.homeassistant.discovery_prefix + "/")
    assert seen_platforms == set(PLATFORM_KEYS)


def test_ids_are_unique_and_derived_from_the_node_id() -> None:
    settings = Settings(node_id="attic-2")
    configs = list(payloads(settings).values())
    unique_ids = [c["unique_id"] for c in configs]
    assert len(set(unique_ids)) == len(unique_ids)
    assert all(uid.startswith("edgespeak_attic-2_") for uid in unique_ids)
    for topic, config in payloads(settings).items():
        component = topic.split("/")[1]
        assert ENTITY_OBJECT_ID.fullmatch(config["object_id"]), config["object_id"]
        assert config["object_id"].startswith("edgespeak_attic_2_")
        assert config["default_entity_id"] == f"{component}.{config['object_id']}"
    other = {c["unique_id"] for c in payloads(Settings(node_id="hall")).values()}
    assert not other & set(unique_ids), "two nodes must not share unique ids"


def test_one_device_with_origin_and_availability_on_every_entity() -> None:
    settings = Settings(node_id="kitchen")
    topics = node(settings)
    configs = list(payloads(settings).values())
    devices = [c["device"] for c in configs]
    assert all(d == devices[0] for d in devices)
    assert devices[0] == {
        "identifiers": ["edgespeak_kitchen"],
        "name": "edgespeak kitchen",
        "manufacturer": "edgespeak",
        "model": "MQTT speech daemon",
        "sw_version": __version__,
    }
    for config in configs:
        assert config["origin"] == {"name": "edgespeak", "sw_version": __version__}
        assert config["availability_topic"] == topics.availability
        assert (config["payload_available"], config["payload_not_available"]) == (
            "online",
            "offline",
        )
        assert "availability" not in config  # "must not be used together"
        assert config["name"] and not config["name"].lower().startswith("edgespeak")


def test_origin_support_url_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(homeassistant, "SUPPORT_URL", "https://example.org/edgespeak")
    for config in payloads(Settings(node_id="kitchen")).values():
        assert config["origin"]["support_url"] == "https://example.org/edgespeak"


def test_version_argument_is_what_is_published() -> None:
    settings = Settings(node_id="kitchen")
    messages = homeassistant.discovery_messages(settings, node(settings), version="9.8.7")
    for _, payload in messages:
        config = json.loads(payload)
        assert config["device"]["sw_version"] == config["origin"]["sw_version"] == "9.8.7"


def test_commands_go_to_the_nodes_own_topics() -> None:
    settings = Settings(
        node_id="attic",
        mqtt=MqttConfig(prefix="speech", groups=("upstairs",)),
        sounds=SoundsConfig(default_chime="ding"),
    )
    assert entity(settings, "notify", "announce")["command_topic"] == "speech/attic/announce"
    assert entity(settings, "button", "stop")["command_topic"] == "speech/attic/stop"
    chime = entity(settings, "button", "test_chime")
    assert (chime["command_topic"], chime["payload_press"]) == ("speech/attic/chime", "ding")
    volume = entity(settings, "number", "volume")
    assert volume["command_topic"] == "speech/attic/volume/set"
    assert (volume["min"], volume["max"], volume["step"]) == (0, 100, 1)
    assert (volume["unit_of_measurement"], volume["mode"]) == ("%", "slider")
    for component, key in [("notify", "announce"), ("button", "stop"), ("number", "volume")]:
        config = entity(settings, component, key)
        assert config["retain"] is False, "a retained command would replay at every start"
        assert config["qos"] == 1
    for config in payloads(settings).values():
        if "state_topic" in config:
            assert config["state_topic"] == "speech/attic/state"


def test_sensor_metadata() -> None:
    settings = Settings(node_id="kitchen")
    ttfa = entity(settings, "sensor", "last_ttfa")
    assert (ttfa["unit_of_measurement"], ttfa["state_class"]) == ("ms", "measurement")
    assert ttfa["device_class"] == "duration" and ttfa["suggested_display_precision"] == 0
    assert entity(settings, "sensor", "queue_length")["state_class"] == "measurement"
    assert entity(settings, "sensor", "cache_entries")["entity_category"] == "diagnostic"
    assert entity(settings, "sensor", "last_error")["entity_category"] == "diagnostic"
    assert "state_class" not in entity(settings, "sensor", "last_error")  # text, not a number


# --- removal and birth ---------------------------------------------------------------------


def test_removal_covers_exactly_the_discovery_topics() -> None:
    settings = Settings(
        node_id="attic",
        homeassistant=HomeAssistantConfig(discovery_prefix="custom/prefix"),
    )
    discovery = homeassistant.discovery_messages(settings, node(settings), version="1")
    removal = homeassistant.removal_messages(settings, node(settings))
    assert [topic for topic, _ in removal] == [topic for topic, _ in discovery]
    assert all(payload == b"" for _, payload in removal)
    assert all(topic.startswith("custom/prefix/") for topic, _ in removal)


def test_is_birth() -> None:
    settings = Settings(node_id="kitchen")
    assert homeassistant.is_birth("homeassistant/status", b"online", settings)
    assert homeassistant.is_birth("homeassistant/status", b"online\n", settings)
    assert not homeassistant.is_birth("homeassistant/status", b"offline", settings)
    assert not homeassistant.is_birth("homeassistant/status", b"", settings)
    assert not homeassistant.is_birth("edgespeak/kitchen/availability", b"online", settings)
    custom = Settings(
        node_id="kitchen", homeassistant=HomeAssistantConfig(status_topic="hass/status")
    )
    assert homeassistant.is_birth("hass/status", b"online", custom)
    assert not homeassistant.is_birth("homeassistant/status", b"online", custom)
