"""The ESPHome side of the tests: the daemon with ``[esphome]`` on, aioesphomeapi's real
``APIClient`` (the library Home Assistant uses) as the peer, and a real aiohttp server holding
the media URLs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from aioesphomeapi import APIClient, MediaPlayerEntityState, MediaPlayerInfo, MediaPlayerState
from aiohttp import web

from harness.stack import free_port
from tests.conftest import Stack, Watcher, daemon_process, logged, watching

RATE = 22050  # the stack's speech rate: URLs are converted to it


def new_key() -> str:
    """A fresh ESPHome encryption key: base64 of 32 random bytes."""
    return base64.b64encode(os.urandom(32)).decode()


def esphome_config(stack: Stack, port: int, **esphome: Any) -> Path:
    """The stack's daemon config with ``[esphome]`` enabled on 127.0.0.1:``port``, no mDNS
    unless asked, and ``esphome`` keys (values as TOML: str, number, bool)."""
    options = {"enabled": True, "host": "127.0.0.1", "port": port, "discovery": False} | esphome
    lines = "".join(f"{k} = {_toml(v)}\n" for k, v in options.items())
    path = stack.config(fade_ms=0, keep_open_s=0)
    path.write_text(path.read_text() + "[esphome]\n" + lines)
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


@dataclass
class Node:
    """The daemon under test: its MQTT watcher and its API port."""

    watcher: Watcher
    port: int
    workdir: Path

    def client(self, key: str | None = None, name: str = "edgespeak-test") -> APIClient:
        return APIClient("127.0.0.1", self.port, None, noise_psk=key, client_info=name)


@contextlib.asynccontextmanager
async def esphome_node(stack: Stack, **esphome: Any) -> AsyncIterator[Node]:
    """Run the daemon with ``[esphome]`` (see :func:`esphome_config`); yields once both MQTT
    is online and the API listens (its log line)."""
    port = int(esphome.pop("port", 0)) or free_port()
    config = esphome_config(stack, port, **esphome)
    with daemon_process(config, stack.capture, stack.workdir):
        async with watching(stack.broker.port) as watcher:
            await logged(stack.daemon_log, "ESPHome API listening on")
            yield Node(watcher, port, stack.workdir)


@dataclass
class Peer:
    """A connected APIClient subscribed to states; ``states`` in arrival order."""

    client: APIClient
    info: MediaPlayerInfo
    states: list[MediaPlayerEntityState] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def on_state(self, state: object) -> None:
        if isinstance(state, MediaPlayerEntityState):
            self.states.append(state)
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_state(
        self, check: Any, *, after: int = 0, timeout_s: float = 20.0
    ) -> MediaPlayerEntityState:
        """The first state from index ``after`` on for which ``check(state)`` holds."""
        async with asyncio.timeout(timeout_s), self._changed:
            while True:
                for state in self.states[after:]:
                    if check(state):
                        return state
                await self._changed.wait()

    def play(self, url: str, *, announce: bool = False) -> None:
        self.client.media_player_command(self.info.key, media_url=url, announcement=announce)

    def played(self) -> list[MediaPlayerState]:
        """The state sequence with repeats folded."""
        out: list[MediaPlayerState] = []
        for s in self.states:
            if not out or out[-1] != s.state:
                out.append(s.state)
        return out


@contextlib.asynccontextmanager
async def peer(node: Node, key: str | None = None) -> AsyncIterator[Peer]:
    """An APIClient connected to ``node`` and subscribed to its states (as Home Assistant)."""
    client = node.client(key)
    await client.connect(login=True)
    try:
        _, entities, _ = await client.device_info_and_list_entities()
        (info,) = [e for e in entities if isinstance(e, MediaPlayerInfo)]
        p = Peer(client, info)
        client.subscribe_states(p.on_state)
        await p.wait_state(lambda s: True)
        yield p
    finally:
        await client.disconnect()


# --- media served over HTTP ---------------------------------------------------------------


def tone(seconds: float, rate: int, channels: int = 1, hz: float = 440.0) -> np.ndarray:
    """A sine of ``hz`` at half scale, float in [-1, 1], shape (frames, channels)."""
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.5 * np.sin(2 * np.pi * hz * t)
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32)


def encoded(fmt: str, subtype: str, seconds: float, rate: int, channels: int) -> bytes:
    """``tone(...)`` encoded by libsndfile (soundfile) as ``fmt``/``subtype``."""
    out = io.BytesIO()
    soundfile.write(out, tone(seconds, rate, channels), rate, format=fmt, subtype=subtype)
    return out.getvalue()


def streaming_wav(rate: int, size_field: int) -> bytes:
    """A 16-bit mono WAV header whose RIFF and data sizes are ``size_field`` (0 or
    0xFFFFFFFF: "not known", as a pipe writes it)."""
    import struct

    return struct.pack(
        "<4sI4s4sIHHIIHH4sI", b"RIFF", size_field, b"WAVE", b"fmt ", 16, 1, 1, rate,
        rate * 2, 2, 16, b"data", size_field,
    )  # fmt: skip


@dataclass
class MediaServer:
    """A real aiohttp server: ``files`` by name at ``/<name>`` (404 for others);
    ``/held.wav`` sends a streaming-size WAV header and 0.5 s of a tone, then holds the
    response open until ``release`` is set (an announcement that plays as long as a test
    needs), then 0.5 s more; ``/hang`` answers nothing until ``release``; ``/short.wav``
    sends less than its Content-Length."""

    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    base: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    held_started: asyncio.Event = field(default_factory=asyncio.Event)
    requests: list[str] = field(default_factory=list)

    def url(self, name: str, query: str = "") -> str:
        return f"{self.base}/{name}" + (f"?{query}" if query else "")

    async def _file(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        name = request.match_info["name"]
        if name not in self.files:
            return web.Response(status=404, text="404: Not Found")
        body, content_type = self.files[name]
        return web.Response(body=body, content_type=content_type)

    async def _held(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        response = web.StreamResponse()
        await response.prepare(request)
        half = (tone(0.5, RATE)[:, 0] * 32767).astype("<i2").tobytes()
        await response.write(streaming_wav(RATE, 0xFFFFFFFF) + half)
        self.held_started.set()
        with contextlib.suppress(ConnectionError):
            await self.release.wait()  # playing, and waiting for the rest, until released
            await response.write(half)
            await response.write_eof()
        return response

    async def _short(self, request: web.Request) -> web.StreamResponse:
        """Promises 100000 bytes, sends a WAV header and 5000, then closes the connection."""
        self.requests.append(request.path_qs)
        response = web.StreamResponse()
        response.content_length = 100_000
        await response.prepare(request)
        await response.write(streaming_wav(RATE, 0xFFFFFFFF) + bytes(5000))
        assert request.transport is not None
        request.transport.close()
        return response

    async def _hang(self, request: web.Request) -> web.StreamResponse:
        """Accepts the request and answers nothing until released."""
        self.requests.append(request.path_qs)
        await self.release.wait()
        return web.Response(status=204)


@contextlib.asynccontextmanager
async def media_server() -> AsyncIterator[MediaServer]:
    server = MediaServer()
    app = web.Application()
    app.router.add_get("/held.wav", server._held)
    app.router.add_get("/hang", server._hang)
    app.router.add_get("/short.wav", server._short)
    app.router.add_get("/{name}", server._file)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    server.base = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        server.release.set()
        await runner.cleanup()
