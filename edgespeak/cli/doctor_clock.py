"""``edgespeak doctor``'s clock row: how well this node's running daemon knows group time.

Asks the daemon over the broker (``<prefix>/<node>/clock/get``, answered on ``clock/status``,
docs/protocols.md §15) and shows its reference, offset, drift, error bound, and whether it is
synced or why not. Only when ``[group] sync`` is on and the broker answered.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiomqtt

from edgespeak.base.errors import EdgespeakError
from edgespeak.cli.doctor_rows import Check
from edgespeak.config import Settings
from edgespeak.inlets.mqtt.connect import ProtocolChoice, connected

ANSWER_S = 3.0  # how long the daemon has to answer


async def check_clock(s: Settings) -> Check:
    """The ``clock`` row: ok while synced, warn when not (with the daemon's reason) or when no
    daemon of this node answers within :data:`ANSWER_S` seconds."""
    base = f"{s.mqtt.prefix}/{s.node_id}/clock"
    try:
        status = await _ask(s, base)
    except TimeoutError:
        detail = f"no daemon of node {s.node_id!r} answered on {base}/get in {ANSWER_S:g} s"
        return Check("clock", "warn", detail, "start the daemon (`edgespeak run`) to see it")
    except (aiomqtt.MqttError, EdgespeakError, ValueError) as exc:
        return Check("clock", "warn", f"could not ask the daemon: {exc}")
    return describe(status)


def describe(status: dict[str, Any]) -> Check:
    """The row for one ``clock/status`` answer."""
    reference = status.get("reference") or "none"
    if status.get("reference") == status.get("node"):
        return Check("clock", "ok", f"this node ({reference}) is the group's reference")
    error = status.get("error_ms")
    detail = (
        f"reference {reference}, offset {status.get('offset_s', 0.0):+.6f} s, "
        f"drift {status.get('drift_ppm', 0.0):+.1f} ppm, error ≤ "
        + ("unknown" if error is None else f"{error:.2f} ms")
    )
    if status.get("synced"):
        return Check("clock", "ok", detail + ", synced")
    fix = "group announcements play unsynchronised here; check the reference and the network"
    return Check("clock", "warn", f"{detail}, not synced: {status.get('reason')}", fix)


async def _ask(s: Settings, base: str) -> dict[str, Any]:
    """The daemon's ``clock/status`` answer; TimeoutError when none comes in time."""
    identifier = f"{s.node_id}-doctor-{uuid.uuid4().hex[:6]}"
    async with asyncio.timeout(ANSWER_S):
        async with connected(s, ProtocolChoice(s), identifier=identifier) as client:
            await client.subscribe(f"{base}/status", qos=1)
            await client.publish(f"{base}/get", b"", qos=1)
            async for message in client.messages:
                payload = message.payload
                if isinstance(payload, bytes | bytearray):
                    data = json.loads(payload)
                    if isinstance(data, dict):
                        return data
    raise TimeoutError  # the connection ended without an answer
