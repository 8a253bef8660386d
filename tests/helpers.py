"""Test helpers that talk to the real server as an independent client."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import numpy as np
import ormsgpack
from aiohttp import web

from edgespeak.config import ServerConfig
from edgespeak.server.app import build_app
from edgespeak.wire.fish import LIVE_PATH, split_first_sentence
from harness.stack import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serving_live(handle: Handler) -> AsyncIterator[str]:
    """Serve ``handle`` at the Fish live path on 127.0.0.1 (a free port); yields the ws:// URL
    and stops the server afterwards."""
    app = web.Application()
    app.router.add_get(LIVE_PATH, handle)
    async with serving_app(app) as url:
        yield url


async def server_audio(url: str, text: str, *, fmt: str, rate: int | None) -> bytes:
    """What the server sends for ``text``: the concatenated ``audio`` of one session, read
    with a plain aiohttp + ormsgpack client (not edgespeak's own), sending the same session
    the daemon sends: first sentence, ``flush``, the rest, ``stop``."""
    request = {"text": "", "format": fmt, "sample_rate": rate, "reference_id": None}
    first, rest = split_first_sentence(text)
    messages = [{"event": "start", "request": request}, {"event": "text", "text": first},
                {"event": "flush"}, {"event": "text", "text": rest}, {"event": "stop"}]  # fmt: skip
    out = bytearray()
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        for msg in messages:
            await ws.send_bytes(ormsgpack.packb(msg))
        async for frame in ws:
            body = ormsgpack.unpackb(frame.data)
            if body["event"] == "audio":
                out += body["audio"]
            elif body["event"] == "finish":
                assert body["reason"] == "stop", body
                return bytes(out)
    raise AssertionError("socket closed before finish")


def snr_db(reference: bytes, test: bytes) -> float:
    """Signal-to-noise ratio in dB of ``test`` against ``reference`` (s16le, same length)."""
    ref = np.frombuffer(reference, dtype="<i2").astype(np.float64)
    out = np.frombuffer(test, dtype="<i2").astype(np.float64)
    noise = np.sum((ref - out) ** 2)
    return float(10 * np.log10(np.sum(ref**2) / max(noise, 1e-9)))


@contextlib.asynccontextmanager
async def serving_app(app: web.Application, path: str = LIVE_PATH) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port); yields the ws:// URL of ``path`` (default the
    Fish live path; its HTTP base is the same URL without the path) and stops the server
    afterwards."""
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"ws://127.0.0.1:{port}{path}"
    finally:
        await runner.cleanup()


class CountingServer:
    """Our server (``build_app`` with ``ServerConfig(voice="en", **options)``: espeak-ng)
    recording every request it gets: ``paths`` in order (each WebSocket handshake is one);
    :meth:`wait` waits on a condition of them."""

    def __init__(self, **options: Any) -> None:
        self.app = build_app(ServerConfig(voice="en", **options))
        self.paths: list[str] = []
        self._changed = asyncio.Condition()
        self.app.middlewares.append(self._count)

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        async with self._changed:
            self.paths.append(request.path)
            self._changed.notify_all()
        return await handler(request)

    async def wait(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Return once ``predicate()`` holds; TimeoutError after ``timeout_s`` seconds."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(predicate)


def espeak_pcm(text: str, voice: str = "en") -> bytes:
    """What espeak-ng itself produces for ``text``: s16le mono PCM at 22050 Hz."""
    out = subprocess.run(
        ["espeak-ng", "--stdout", "-b", "1", "-v", voice],
        input=text.encode(),
        capture_output=True,
        check=True,
    ).stdout
    assert out[:4] == b"RIFF" and out[36:40] == b"data"
    return out[44:]
