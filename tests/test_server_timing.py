"""The local server logs its own time to first audio per session (read by bench/stream.py to
tell the server's share of TTFA from the client's)."""

from __future__ import annotations

import logging
import re
import time

import aiohttp
import ormsgpack
import pytest

from edgespeak.config import ServerConfig
from edgespeak.server.app import build_app
from tests.helpers import serving_app

LOGGED = re.compile(r"session finished: (\d+) characters, first audio after ([\d.]+|-) ms")
START = {"event": "start", "request": {"text": "", "format": "pcm", "sample_rate": 22050}}


async def session(ws: aiohttp.ClientWebSocketResponse, text: str) -> float | None:
    """One session; milliseconds from sending ``start`` to the first ``audio`` (None: none)."""
    started = time.monotonic()
    messages = [START] + ([{"event": "text", "text": text}] if text else []) + [{"event": "stop"}]
    for msg in messages:
        await ws.send_bytes(ormsgpack.packb(msg))
    first: float | None = None
    async for frame in ws:
        body = ormsgpack.unpackb(frame.data)
        if body["event"] == "audio" and first is None:
            first = (time.monotonic() - started) * 1000
        elif body["event"] == "finish":
            assert body["reason"] == "stop", body
            return first
    raise AssertionError("socket closed before finish")


async def test_each_session_logs_its_first_audio_time_within_what_the_client_saw(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="edgespeak.server.app"):
        async with serving_app(build_app(ServerConfig(voice="en"))) as url:
            async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
                seen = [await session(ws, "Hello there."), await session(ws, "")]
    logged = [LOGGED.search(r.getMessage()) for r in caplog.records]
    found = [m.groups() for m in logged if m is not None]
    assert [chars for chars, _ in found] == ["12", "0"]
    client_ms = seen[0]
    assert client_ms is not None and seen[1] is None
    server_ms = float(found[0][1])
    # The server's share starts after the client sent 'start' and ends before the client
    # got the audio: it is positive and never more than what the client measured.
    assert 0 < server_ms <= client_ms
    assert found[1][1] == "-"  # no audio, no time
