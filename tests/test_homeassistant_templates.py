"""Home Assistant renders edgespeak's discovery templates: the notify command template and the
value templates of the state sensors, with real Jinja2 as Home Assistant's MQTT integration does
(tests/test_homeassistant.py checks the payloads' shape)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgespeak.config import Settings
from edgespeak.inlets.payload import parse_payload
from tests.test_homeassistant import SAMPLE_STATE, entity, render_command, render_value


@pytest.mark.parametrize(
    "message",
    ['hello "you"\n', "Grüße aus der Küche 🍲 <b>&'\\", "  padded  ", "", "[Kitchen] oven hot"],
)
def test_notify_wraps_plain_text_as_json(message: str) -> None:
    template = entity(Settings(node_id="kitchen"), "notify", "announce")["command_template"]
    rendered = render_command(template, message)
    assert json.loads(rendered) == {"text": message}


def test_notify_escapes_quotes_and_newlines() -> None:
    template = entity(Settings(node_id="kitchen"), "notify", "announce")["command_template"]
    rendered = render_command(template, 'hello "you"\n')
    assert "\n" not in rendered and '\\"you\\"' in rendered
    announcement = parse_payload(rendered.encode("utf-8"))
    assert announcement.text == 'hello "you"'  # the parser strips the text


def test_notify_passes_a_json_object_through() -> None:
    template = entity(Settings(node_id="kitchen"), "notify", "announce")["command_template"]
    message = '{"text": "Smoke in the kitchen!", "priority": "critical", "chime": "ding"}'
    rendered = render_command(template, message)
    assert json.loads(rendered) == {
        "text": "Smoke in the kitchen!",
        "priority": "critical",
        "chime": "ding",
    }
    announcement = parse_payload(rendered.encode("utf-8"))
    assert (announcement.text, announcement.priority, announcement.chime) == (
        "Smoke in the kitchen!",
        "critical",
        "ding",
    )
    padded = render_command(template, '\n  {"text": "hi", "volume": 0.5} ')
    assert json.loads(padded) == {"text": "hi", "volume": 0.5}


def test_notify_output_is_a_string_home_assistant_publishes_as_is() -> None:
    """HA turns a rendered ``b'...'`` literal into raw bytes; our output never looks like one."""
    template = entity(Settings(node_id="kitchen"), "notify", "announce")["command_template"]
    for message in ["b'\\x00'", "plain"]:
        assert render_command(template, message).startswith("{")


def state_payload(**changes: Any) -> str:
    return json.dumps(SAMPLE_STATE | changes)


@pytest.mark.parametrize(
    ("component", "key", "changes", "expected"),
    [
        ("number", "volume", {}, "42"),
        ("number", "volume", {"volume": 0}, "0"),
        ("sensor", "last_ttfa", {}, "351.25"),
        ("sensor", "last_ttfa", {"last_ttfa_ms": None}, "None"),
        ("sensor", "queue_length", {}, "3"),
        ("sensor", "queue_length", {"queue": 0}, "0"),
        ("sensor", "cache_entries", {}, "17"),
        ("sensor", "cache_entries", {"cache_entries": None}, "None"),
        ("sensor", "last_error", {}, "provider closed the connection"),
        ("sensor", "last_error", {"last_error": None}, "None"),
        ("binary_sensor", "speaking", {}, "ON"),
        ("binary_sensor", "speaking", {"state": "idle"}, "OFF"),
        ("binary_sensor", "provider", {}, "ON"),
        ("binary_sensor", "provider", {"provider_reachable": False}, "OFF"),
    ],
)
def test_value_templates_read_the_state_json(
    component: str, key: str, changes: dict[str, Any], expected: str
) -> None:
    """``None`` is Home Assistant's PAYLOAD_NONE: the state becomes unknown."""
    template = entity(Settings(node_id="kitchen"), component, key)["value_template"]
    assert render_value(template, state_payload(**changes)) == expected


def test_binary_sensor_values_match_their_payloads() -> None:
    settings = Settings(node_id="kitchen")
    for key in ("speaking", "provider"):
        config = entity(settings, "binary_sensor", key)
        for changes in ({}, {"state": "idle", "provider_reachable": False}):
            rendered = render_value(config["value_template"], state_payload(**changes))
            assert rendered in (config["payload_on"], config["payload_off"])


def test_numbers_parse_as_numbers() -> None:
    settings = Settings(node_id="kitchen")
    for component, key in [("number", "volume"), ("sensor", "last_ttfa")]:
        template = entity(settings, component, key)["value_template"]
        float(render_value(template, state_payload()))


def test_last_error_is_cut_to_homeassistants_state_limit() -> None:
    template = entity(Settings(node_id="kitchen"), "sensor", "last_error")["value_template"]
    long_error = "é" * 200 + "x" * 200 + "\n"
    rendered = render_value(template, state_payload(last_error=long_error))
    assert len(rendered) == 255 and rendered == long_error[:255]
    assert render_value(template, state_payload(last_error="short")) == "short"
