"""Home Assistant MQTT discovery: the payloads that make one edgespeak node a Home Assistant device.

Pure functions, no I/O: the MQTT link publishes what they return. Conventions (docs/protocols.md
§10) come from Home Assistant's documentation:

- discovery topic ``<discovery_prefix>/<component>/[<node_id>/]<object_id>/config`` with a
  retained JSON payload; an empty retained payload removes the entity — "MQTT discovery",
  https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery. We use the per-component
  form with ``<node_id>`` = this node's id and ``<object_id>`` = the entity's ``unique_id``
  (the page's "best practice"); it works on every Home Assistant version that has MQTT notify.
- re-send discovery when Home Assistant's birth message ``online`` arrives on its status topic
  (default ``homeassistant/status``) — same page, "Birth and last will messages".
- ``device``, ``origin`` (``name``, ``sw_version``, ``support_url``) and the availability keys are
  documented per platform: https://www.home-assistant.io/integrations/notify.mqtt/,
  ``button.mqtt/``, ``number.mqtt/``, ``sensor.mqtt/``, ``binary_sensor.mqtt/`` (same site).
- templates are Home Assistant's Jinja2: command templates get the outgoing value as ``value``;
  value templates get the incoming payload as ``value`` and, when it is JSON, ``value_json``;
  the rendered text is stripped — https://www.home-assistant.io/docs/configuration/templating/
  ("Using templates with the MQTT integration").

Entities of node ``<n>`` (entity ids ``<component>.edgespeak_<n>_<key>``), as
``component key``: what:

- ``notify announce``: speak a message (``notify.send_message``) on the node's own announce
  topic, see :data:`NOTIFY_COMMAND_TEMPLATE`;
- ``button stop``: stop speaking and clear the queue;
- ``button test_chime``: play ``[sounds] default_chime``;
- ``number volume``: a 0-100 % slider, read back from the state JSON's ``volume``;
- ``sensor last_ttfa`` (``last_ttfa_ms``, ms), ``sensor queue_length`` (``queue``),
  ``sensor cache_entries`` (diagnostic), ``sensor last_error`` (cut to 255 characters,
  diagnostic);
- ``binary_sensor speaking``: on while ``state`` is ``speaking``;
- ``binary_sensor provider``: ``provider_reachable`` (connectivity, diagnostic).

The sensors read the retained state JSON: ``{"state": "idle"|"speaking", "volume": int,
"queue": int, "cache_entries": int|null, "provider_reachable": bool, "last_ttfa_ms":
float|null, "last_error": str|null}``. A ``null`` renders as ``None``, which Home Assistant
shows as unknown.
"""

from __future__ import annotations

import json
from typing import Any, Final

from edgespeak.config import Settings
from edgespeak.inlets.mqtt.topics import Topics

#: The project's support page for the ``origin`` block; None leaves ``support_url`` out (Home
#: Assistant rejects a discovery payload whose ``support_url`` is not an http(s) URL).
SUPPORT_URL: str | None = None

#: notify command template. Home Assistant's MQTT notify renders it with the message as
#: ``value`` (the title is dropped). A message that is a JSON object — after trimming it starts
#: with ``{``, the rule the announce parser itself uses — is passed through unchanged, so
#: ``{"text": "Smoke!", "priority": "critical"}`` keeps its options; anything else becomes
#: ``{"text": <message>}`` via ``tojson`` (quotes, newlines and unicode escaped). A malformed
#: ``{...`` message is passed through too and ends as a ``failed`` event naming the JSON error,
#: as it would if published directly: Jinja cannot catch a ``from_json`` error, and
#: ``from_json``'s default argument only exists from Home Assistant 2025.7.
NOTIFY_COMMAND_TEMPLATE: Final = (
    "{%- if value is string and (value | trim).startswith('{') -%}{{ value }}"
    "{%- else -%}{{ {'text': value} | tojson }}{%- endif -%}"
)

#: Home Assistant's cap on a state string (longer states are rejected).
MAX_STATE_CHARS: Final = 255

AVAILABLE: Final = "online"
NOT_AVAILABLE: Final = "offline"


def _json_field(key: str) -> str:
    """A value template that renders the state JSON's ``key`` (``null`` → ``None``)."""
    return f"{{{{ value_json.{key} }}}}"


def _on_off(condition: str) -> str:
    """A value template rendering ``ON`` when the Jinja ``condition`` holds, else ``OFF``."""
    return f"{{{{ 'ON' if {condition} else 'OFF' }}}}"


def _specific(settings: Settings, topics: Topics) -> list[tuple[str, str, dict[str, Any]]]:
    """(component, key, platform-specific config) for every entity, in publishing order."""
    state = topics.state
    command = {"qos": 1, "retain": False}
    last_error = (
        f"{{{{ value_json.last_error[:{MAX_STATE_CHARS}]"
        " if value_json.last_error is string else 'None' }}"
    )
    provider = (
        "{{ ('ON' if value_json.provider_reachable else 'OFF')"
        " if value_json.provider_reachable is boolean else 'None' }}"
    )
    return [
        (
            "notify",
            "announce",
            {
                "name": "Announce",
                "icon": "mdi:bullhorn",
                "command_topic": topics.announce[0],
                "command_template": NOTIFY_COMMAND_TEMPLATE,
                **command,
            },
        ),
        (
            "button",
            "stop",
            {
                "name": "Stop",
                "icon": "mdi:stop-circle-outline",
                "command_topic": topics.stop[0],
                **command,
            },
        ),
        (
            "button",
            "test_chime",
            {
                "name": "Test chime",
                "device_class": "identify",
                "entity_category": "config",
                "command_topic": topics.chime,
                "payload_press": settings.sounds.default_chime,
                **command,
            },
        ),
        (
            "number",
            "volume",
            {
                "name": "Volume",
                "icon": "mdi:volume-high",
                "command_topic": topics.volume_set,
                "state_topic": state,
                "value_template": _json_field("volume"),
                "min": 0,
                "max": 100,
                "step": 1,
                "unit_of_measurement": "%",
                "mode": "slider",
                **command,
            },
        ),
        (
            "sensor",
            "last_ttfa",
            {
                "name": "Last TTFA",
                "state_topic": state,
                "value_template": _json_field("last_ttfa_ms"),
                "device_class": "duration",
                "unit_of_measurement": "ms",
                "state_class": "measurement",
                "suggested_display_precision": 0,
            },
        ),
        (
            "sensor",
            "queue_length",
            {
                "name": "Queue length",
                "icon": "mdi:playlist-play",
                "state_topic": state,
                "value_template": _json_field("queue"),
                "state_class": "measurement",
                "suggested_display_precision": 0,
            },
        ),
        (
            "sensor",
            "cache_entries",
            {
                "name": "Cache entries",
                "icon": "mdi:database",
                "entity_category": "diagnostic",
                "state_topic": state,
                "value_template": _json_field("cache_entries"),
                "state_class": "measurement",
                "suggested_display_precision": 0,
            },
        ),
        (
            "sensor",
            "last_error",
            {
                "name": "Last error",
                "icon": "mdi:alert-circle-outline",
                "entity_category": "diagnostic",
                "state_topic": state,
                "value_template": last_error,
            },
        ),
        (
            "binary_sensor",
            "speaking",
            {
                "name": "Speaking",
                "icon": "mdi:account-voice",
                "state_topic": state,
                "value_template": _on_off("value_json.state == 'speaking'"),
                "payload_on": "ON",
                "payload_off": "OFF",
            },
        ),
        (
            "binary_sensor",
            "provider",
            {
                "name": "TTS provider",
                "device_class": "connectivity",
                "entity_category": "diagnostic",
                "state_topic": state,
                "value_template": provider,
                "payload_on": "ON",
                "payload_off": "OFF",
            },
        ),
    ]


def _unique_id(settings: Settings, key: str) -> str:
    return f"edgespeak_{settings.node_id}_{key}"


def _topic(settings: Settings, component: str, key: str) -> str:
    prefix = settings.homeassistant.discovery_prefix.rstrip("/")
    return f"{prefix}/{component}/{settings.node_id}/{_unique_id(settings, key)}/config"


def discovery_messages(
    settings: Settings, topics: Topics, *, version: str
) -> list[tuple[str, bytes]]:
    """(topic, JSON payload) for every entity of this node; publish each retained.

    Every payload carries the same ``device`` block (identifiers ``edgespeak_<node_id>``), an
    ``origin`` block, ``availability_topic`` = ``topics.availability`` with ``online``/``offline``,
    a ``unique_id`` ``edgespeak_<node_id>_<key>`` and the suggested entity id twice:
    ``default_entity_id`` (``<component>.<object id>``, Home Assistant 2025.10 and later) and
    ``object_id`` (the same without the domain, for older versions; newer ones ignore it).
    ``settings.homeassistant.enabled`` is the caller's business.
    """
    node = settings.node_id
    device = {
        "identifiers": [f"edgespeak_{node}"],
        "name": f"edgespeak {node}",
        "manufacturer": "edgespeak",
        "model": "MQTT speech daemon",
        "sw_version": version,
    }
    origin: dict[str, str] = {"name": "edgespeak", "sw_version": version}
    if SUPPORT_URL:
        origin["support_url"] = SUPPORT_URL
    messages: list[tuple[str, bytes]] = []
    for component, key, specific in _specific(settings, topics):
        object_id = _unique_id(settings, key).replace("-", "_")  # entity ids allow [a-z0-9_]
        config = {
            **specific,
            "unique_id": _unique_id(settings, key),
            "object_id": object_id,
            "default_entity_id": f"{component}.{object_id}",
            "availability_topic": topics.availability,
            "payload_available": AVAILABLE,
            "payload_not_available": NOT_AVAILABLE,
            "device": device,
            "origin": origin,
        }
        payload = json.dumps(config, ensure_ascii=False, separators=(",", ":"))
        messages.append((_topic(settings, component, key), payload.encode("utf-8")))
    return messages


def removal_messages(settings: Settings, topics: Topics) -> list[tuple[str, bytes]]:
    """The discovery topics of :func:`discovery_messages`, each with an empty payload.

    Published retained, an empty payload removes the entity (and the device once it has none
    left) and clears the retained discovery message from the broker.
    """
    return [(_topic(settings, c, key), b"") for c, key, _ in _specific(settings, topics)]


def is_birth(topic: str, payload: bytes, settings: Settings) -> bool:
    """True for Home Assistant's birth message: ``online`` on ``[homeassistant] status_topic``.

    On it, publish :func:`discovery_messages` again (Home Assistant restarted and may have lost
    non-retained state).
    """
    return topic == settings.homeassistant.status_topic and payload.strip() == b"online"
