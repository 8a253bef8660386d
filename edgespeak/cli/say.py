"""``edgespeak say``: publish one announcement to this node and report how it went."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

import aiomqtt

from edgespeak.base.events import TERMINAL
from edgespeak.config import Settings
from edgespeak.inlets.mqtt.connect import ProtocolChoice, connected
from edgespeak.inlets.mqtt.topics import Topics


async def say(settings: Settings, text: str, *, voice: str | None, timeout_s: float) -> int:
    """Publish ``text`` on ``<prefix>/<node_id>/announce``, wait for its last event (one of
    :data:`~edgespeak.base.events.TERMINAL`, at most ``timeout_s`` seconds); print source and
    TTFA when it finished, else the state and its error.

    Returns 0 when spoken, 1 when it failed, was interrupted or expired, or the wait timed
    out, 2 when the broker is unreachable.
    """
    topics = Topics.from_settings(settings)
    ann_id = uuid.uuid4().hex[:12]
    payload = {"text": text, "id": ann_id} | ({"voice": voice} if voice else {})
    try:
        async with connected(settings, ProtocolChoice(settings), identifier=None) as client:
            await client.subscribe(topics.event, qos=1)
            await client.publish(topics.announce[0], json.dumps(payload), qos=1)
            async with asyncio.timeout(timeout_s):
                async for message in client.messages:
                    event = json.loads(bytes(message.payload))
                    if event.get("id") != ann_id:
                        continue
                    if event.get("state") not in TERMINAL:
                        continue
                    if event["state"] == "finished":
                        print(
                            f"spoken: source={event.get('source')} "
                            f"ttfa={event.get('ttfa_ms')} ms duration={event.get('duration_s')} s"
                            + (f" (fallback: {event['reason']})" if event.get("reason") else "")
                        )
                        return 0
                    print(f"{event['state']}: {event.get('error')}", file=sys.stderr)
                    return 1
    except aiomqtt.MqttError as exc:
        print(f"edgespeak say: broker {settings.mqtt.host}:{settings.mqtt.port}: {exc}",
              file=sys.stderr)  # fmt: skip
        return 2
    except TimeoutError:
        print(f"no answer from node {settings.node_id!r} within {timeout_s:g} s", file=sys.stderr)
        return 1
    return 1
