"""What users would run instead of the daemon: ``aplay`` spawned per announcement, driven over
MQTT so both paths start from the same publish (bench/cache_hit.py's path B)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from dataclasses import dataclass, field
from typing import IO, Any

import aiomqtt

from bench.common import NODELAY

APLAY_TOPIC = "bench/aplay/announce"


@dataclass
class AplaySubscriber:
    """Path B: on each message ``{"id", "wav"}``, ``aplay -q -D default WAV``, wait for its exit."""

    port: int
    env: dict[str, str]
    stderr: IO[bytes]
    extra_args: list[str]
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    pending: dict[str, asyncio.Future[tuple[float, int]]] = field(default_factory=dict)

    async def run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, socket_options=NODELAY) as client:
            await client.subscribe(APLAY_TOPIC, qos=1)
            self.ready.set()
            async for message in client.messages:
                received = time.monotonic()
                request = json_payload(message.payload)
                proc = await asyncio.create_subprocess_exec(
                    "aplay", "-q", "-D", "default", *self.extra_args, request["wav"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr,
                    env=self.env,
                )  # fmt: skip
                code = await proc.wait()
                fut = self.pending.pop(request["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result((received, code))


def json_payload(payload: object) -> dict[str, Any]:
    if not isinstance(payload, bytes | bytearray):
        raise TypeError(f"unexpected MQTT payload {payload!r}")
    body: dict[str, Any] = json.loads(bytes(payload))
    return body
