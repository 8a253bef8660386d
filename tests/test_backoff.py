"""The one reconnection policy (base/backoff.py): by count, in a tenacity loop, and in the
broker link, whose reconnections a real TCP listener times."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from edgespeak.base.backoff import Backoff
from edgespeak.config import Settings
from edgespeak.inlets.mqtt.link import MqttLink

CAP_S = 0.4  # seconds: [mqtt] reconnect_max_s of the link test
NOT_AUTHORISED = bytes([0x20, 3, 0, 0x87, 0])  # MQTT 5 CONNACK: reason 0x87, no properties
LOW = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]  # rng 0: half of each ceiling


def test_backoff_delays_grow_to_the_cap_with_jitter_and_never_below_half() -> None:
    low = [Backoff(first_s=0.5, max_s=30, rng=lambda: 0.0).after(n) for n in range(1, 10)]
    high = [Backoff(first_s=0.5, max_s=30, rng=lambda: 0.999999).after(n) for n in range(1, 10)]
    assert low == LOW
    assert [round(h, 3) for h in high] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert Backoff(max_s=30, rng=lambda: 0.5).after(10_000) == 22.5  # no overflow far out


async def test_a_tenacity_loop_waits_the_same_delays_and_starts_afresh_after_a_success() -> None:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    policy = Backoff(first_s=0.5, max_s=30, rng=lambda: 0.0)
    for failures in (9, 2):  # one loop per connection: the second starts from the first delay
        calls = itertools.count(1)
        async for attempt in AsyncRetrying(
            wait=policy, sleep=record, stop=stop_after_attempt(10),
            retry=retry_if_exception_type(ConnectionError),
        ):  # fmt: skip
            with attempt:
                if next(calls) <= failures:
                    raise ConnectionError("refused")
    assert waits == LOW + LOW[:2]


async def test_the_broker_link_waits_at_least_half_the_ceiling_between_attempts() -> None:
    """Every ceiling is the cap here (first 0.5 s > 0.4 s), so each gap is 0.2-0.4 s. Before
    the link used :class:`Backoff` (tenacity's full jitter, 0-0.4 s) 8 gaps passed this only
    by chance (0.55**8, under 1 %)."""
    opened: list[float] = []
    changed = asyncio.Condition()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with changed:
            opened.append(asyncio.get_running_loop().time())
            changed.notify_all()
        await reader.read(1)  # the CONNECT has come
        writer.write(NOT_AUTHORISED)  # the link's attempt fails at once
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = Settings(
        node_id="testnode", mqtt={"port": port, "protocol": "5", "reconnect_max_s": CAP_S}
    )
    link = asyncio.create_task(MqttLink(settings, routes=[]).run())
    try:
        async with asyncio.timeout(20), changed:
            await changed.wait_for(lambda: len(opened) >= 9)
    finally:
        link.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await link
        server.close()
        await server.wait_closed()
        gc.collect()  # the refused attempts' paho clients, whose __del__ needs a running loop
    gaps = [b - a for a, b in itertools.pairwise(opened[:9])]
    assert all(CAP_S / 2 * 0.9 <= gap for gap in gaps), gaps
