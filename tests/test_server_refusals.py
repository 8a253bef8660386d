"""Every endpoint of the local server refuses alike, seen by a plain aiohttp client: the key
check (Cartesia's extra key forms only on Cartesia's endpoint) and ``test_refuse_status``,
each a JSON ``{status, message}`` that never echoes the key offered."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from edgespeak.config import ServerConfig
from edgespeak.server.app import build_app
from edgespeak.wire import cartesia as cp
from edgespeak.wire import fish as fp
from tests.helpers import serving_app

KEY, WRONG = "sk-4c1d9e77ab", "sk-wrong-5f02"
# (method, path): Fish live, POST /v1/tts, GET /model, Cartesia's WebSocket. The WebSocket
# paths are asked without an upgrade: a refusal comes before it, a request let through fails
# the upgrade with 400 instead.
ENDPOINTS = [("GET", fp.LIVE_PATH), ("POST", "/v1/tts"), ("GET", "/model"),
             ("GET", cp.WEBSOCKET_PATH)]  # fmt: skip
PASSED = {fp.LIVE_PATH: 400, "/v1/tts": 400, "/model": 200, cp.WEBSOCKET_PATH: 400}


@contextlib.asynccontextmanager
async def server(**options: Any) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """Our server with ``ServerConfig(voice="en", **options)``; yields its http:// base and a
    session."""
    async with serving_app(build_app(ServerConfig(voice="en", **options))) as url:
        base = url.replace("ws://", "http://").removesuffix(fp.LIVE_PATH)
        async with aiohttp.ClientSession() as http:
            yield base, http


async def answer(
    http: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str]
) -> tuple[int, str]:
    """The status and body of an empty JSON request (a body POST /v1/tts refuses as empty)."""
    async with http.request(method, url, headers=headers, json={"text": ""}) as response:
        return response.status, await response.text()


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_every_endpoint_checks_the_key_and_never_echoes_it(method: str, path: str) -> None:
    async with server(token=SecretStr(KEY)) as (base, http):
        for headers in ({}, {"Authorization": f"Bearer {WRONG}"}, {"Authorization": KEY}):
            status, body = await answer(http, method, base + path, headers)
            assert status == 401, (headers, body)
            assert '"status": 401' in body and "invalid or missing" in body
            assert WRONG not in body and KEY not in body
        status, _ = await answer(http, method, base + path, {"Authorization": f"Bearer {KEY}"})
        assert status == PASSED[path]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_cartesias_key_forms_count_on_its_endpoint_only(method: str, path: str) -> None:
    expected = PASSED[path] if path == cp.WEBSOCKET_PATH else 401
    async with server(token=SecretStr(KEY)) as (base, http):
        status, _ = await answer(http, method, base + path, {"X-API-Key": KEY})
        assert status == expected
        status, _ = await answer(http, method, f"{base}{path}?api_key={KEY}", {})
        assert status == expected
        status, _ = await answer(http, method, f"{base}{path}?api_key={WRONG}", {})
        assert status == 401


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_the_refuse_switch_answers_every_endpoint_even_with_the_right_key(
    method: str, path: str
) -> None:
    async with server(token=SecretStr(KEY), test_refuse_status=402) as (base, http):
        status, body = await answer(http, method, base + path, {"Authorization": f"Bearer {KEY}"})
    assert status == 402
    assert '"status": 402' in body and "test_refuse_status=402" in body and KEY not in body
