"""``edgespeak ha remove``: take this node out of Home Assistant.

Publishes an empty retained payload on every discovery topic of the node (Home Assistant then
deletes the entities; docs/protocols.md §10) and clears the retained state and availability,
so nothing of the node is left on the broker. Run it with the daemon stopped, or the daemon
publishes discovery again when it reconnects.
"""

from __future__ import annotations

import sys

import aiomqtt

from edgespeak.config import Settings
from edgespeak.inlets.homeassistant.discovery import removal_messages
from edgespeak.inlets.mqtt.connect import ProtocolChoice, connected
from edgespeak.inlets.mqtt.topics import Topics


async def remove(settings: Settings) -> int:
    """Clear the node's discovery, state and availability. Returns 0, or 2 when the broker
    cannot be reached (the error is printed)."""
    topics = Topics.from_settings(settings)
    messages = removal_messages(settings, topics)
    messages += [(topics.state, b""), (topics.availability, b"")]
    try:
        async with connected(settings, ProtocolChoice(settings), identifier=None) as client:
            for topic, payload in messages:
                await client.publish(topic, payload, qos=1, retain=True)
    except aiomqtt.MqttError as exc:
        where = f"{settings.mqtt.host}:{settings.mqtt.port}"
        print(f"edgespeak ha remove: broker {where}: {exc}", file=sys.stderr)
        return 2
    print(f"removed node {settings.node_id!r} from Home Assistant ({len(messages)} topics cleared)")
    return 0
