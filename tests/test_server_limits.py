"""The local server's limits, seen by a plain aiohttp + ormsgpack client: connections past
``max_connections`` get HTTP 429, sessions past ``max_sessions`` end at once with a ``finish``
error, text past ``max_text_chars`` ends its session, and each frees up for the next. Cartesia's
``/tts/websocket`` (plain JSON frames) counts in the same limits: a socket is a connection, a
context a session."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import ormsgpack
import pytest
from pydantic import SecretStr

from edgespeak.config import ServerConfig
from edgespeak.server.app import CAPACITY, build_app
from edgespeak.wire import cartesia as cp
from edgespeak.wire import fish as fp
from tests.helpers import serving_app

START = {"event": "start", "request": {"text": "", "format": "pcm", "sample_rate": 22050}}


async def send(ws: aiohttp.ClientWebSocketResponse, *messages: dict[str, Any]) -> None:
    for msg in messages:
        await ws.send_bytes(ormsgpack.packb(msg))


async def finish(ws: aiohttp.ClientWebSocketResponse) -> tuple[dict[str, Any], int]:
    """The session's ``finish`` and the bytes of audio before it."""
    audio = 0
    async for frame in ws:
        body = ormsgpack.unpackb(frame.data)
        if body["event"] == "audio":
            audio += len(body["audio"])
        elif body["event"] == "finish":
            return body, audio
    raise AssertionError("socket closed before finish")


@contextlib.asynccontextmanager
async def server(**options: Any) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    async with serving_app(build_app(ServerConfig(voice="en", **options))) as url:
        async with aiohttp.ClientSession() as http:
            yield url, http


async def test_connections_past_the_limit_get_429_until_one_closes() -> None:
    async with server(max_connections=2) as (url, http):
        first = await http.ws_connect(url)
        second = await http.ws_connect(url)
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(url)
        assert info.value.status == 429
        await first.close()
        third = await http.ws_connect(url)  # the closed one's place is free again
        await send(third, START, {"event": "text", "text": "Hi."}, {"event": "stop"})
        assert (await finish(third))[0]["reason"] == "stop"
        await second.close()
        await third.close()


async def test_sessions_past_the_limit_end_at_once_and_free_up_when_one_ends() -> None:
    async with server(max_sessions=1) as (url, http):
        busy, other = await http.ws_connect(url), await http.ws_connect(url)
        await send(busy, START, {"event": "text", "text": "Still talking. "})
        await send(other, START, {"event": "text", "text": "Me too."}, {"event": "stop"})
        refused, audio = await finish(other)
        assert refused == {
            "event": "finish",
            "reason": "error",
            "message": "server busy: 1 sessions running ([server] max_sessions)",
        }
        assert audio == 0
        await send(busy, {"event": "stop"})
        assert (await finish(busy))[0]["reason"] == "stop"
        await send(other, START, {"event": "text", "text": "Now me."}, {"event": "stop"})
        done, audio = await finish(other)
        assert done["reason"] == "stop" and audio > 0


async def test_a_client_leaving_mid_session_gives_its_session_back() -> None:
    app = build_app(ServerConfig(voice="en", max_sessions=1))
    async with serving_app(app) as url, aiohttp.ClientSession() as http:
        gone = await http.ws_connect(url)
        await send(gone, START, {"event": "text", "text": "Hello "})
        await gone.close()
        ws = await http.ws_connect(url)
        await send(ws, START, {"event": "text", "text": "Hi."}, {"event": "stop"})
        assert (await finish(ws))[0]["reason"] == "stop"
        await ws.close()
    assert (app[CAPACITY].sessions, app[CAPACITY].connections) == (0, 0)


async def test_session_text_past_max_text_chars_fails_that_session_only() -> None:
    async with server(max_text_chars=20) as (url, http):
        ws = await http.ws_connect(url)
        words = [{"event": "text", "text": "word "} for _ in range(5)]
        await send(ws, START, *words, {"event": "stop"})
        failed, _ = await finish(ws)
        assert failed["reason"] == "error"
        assert failed["message"] == "session text exceeds 20 characters"
        await send(ws, START, {"event": "text", "text": "Short."}, {"event": "stop"})
        assert (await finish(ws))[0]["reason"] == "stop"
        await ws.close()


async def test_a_missing_or_wrong_token_is_refused_before_counting() -> None:
    async with server(token=SecretStr("s3cret-token"), max_connections=1) as (url, http):
        for headers in ({}, {"Authorization": "Bearer nope"}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await http.ws_connect(url, headers=headers)
            assert info.value.status == 401
        ws = await http.ws_connect(url, headers={"Authorization": "Bearer s3cret-token"})
        await ws.close()


def cartesia_url(url: str) -> str:
    """The Cartesia WebSocket of the server whose Fish live URL is ``url``."""
    return url.removesuffix(fp.LIVE_PATH) + cp.WEBSOCKET_PATH


async def say(ws: aiohttp.ClientWebSocketResponse, context_id: str, text: str, more: bool) -> None:
    """One input of a Cartesia context (the transcript is spoken once ``more`` is False)."""
    body = cp.generation_request(
        context_id=context_id, model_id="sonic-2", voice_id="en", transcript=text,
        sample_rate=22050, continue_=more, max_buffer_delay_ms=0,
    )  # fmt: skip
    await ws.send_str(json.dumps(body))


async def ending(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next ``done`` or ``error`` frame, whatever its context (chunks skipped)."""
    async with asyncio.timeout(20):
        async for frame in ws:
            body = json.loads(frame.data)
            if body["type"] in ("done", "error"):
                return dict(body)
    raise AssertionError("socket closed before done or error")


async def test_cartesia_sockets_count_as_connections_with_fishs() -> None:
    app = build_app(ServerConfig(voice="en", max_connections=2))
    async with serving_app(app) as url, aiohttp.ClientSession() as http:
        fish, cartesia = await http.ws_connect(url), await http.ws_connect(cartesia_url(url))
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(cartesia_url(url))
        assert info.value.status == 429
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(url)  # a Cartesia socket holds one of Fish's places too
        assert info.value.status == 429
        await cartesia.close()
        again = await http.ws_connect(cartesia_url(url))  # the closed one's place is free
        await say(again, "c1", "Hi.", False)
        assert (await ending(again))["type"] == "done"
        await again.close()
        await fish.close()
    assert app[CAPACITY].connections == 0


async def test_cartesia_contexts_past_max_sessions_get_a_429_error_and_free_up() -> None:
    app = build_app(ServerConfig(voice="en", max_sessions=1))
    async with serving_app(app) as url, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(cartesia_url(url))
        await say(ws, "busy", "Still talking. ", True)  # open, not ended: a session held
        await say(ws, "other", "Me too.", False)
        refused = await ending(ws)
        assert (refused["type"], refused["context_id"], refused["status_code"]) == (
            "error", "other", 429,
        )  # fmt: skip
        assert refused["message"] == "server busy: 1 sessions running ([server] max_sessions)"
        fish = await http.ws_connect(url)  # the limit is shared with Fish's sessions
        await send(fish, START, {"event": "text", "text": "Hi."}, {"event": "stop"})
        assert (await finish(fish))[0]["message"].startswith("server busy")
        await ws.send_str(json.dumps({"context_id": "busy", "cancel": True}))
        for context_id in ("later", "last"):  # freed by the cancel, then by 'done'
            await say(ws, context_id, "Now me.", False)
            done = await ending(ws)
            assert (done["type"], done["context_id"]) == ("done", context_id), done
        await ws.close()
        await fish.close()
    assert (app[CAPACITY].sessions, app[CAPACITY].connections) == (0, 0)
