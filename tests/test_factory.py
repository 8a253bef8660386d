"""make_client: the client the settings ask for, with the [tts] settings, against a real
server whose handshakes the test times."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from aiohttp import web

from edgespeak.config import Settings
from edgespeak.providers.factory import make_client
from edgespeak.wire import cartesia as cp
from edgespeak.wire import fish as fp
from tests.helpers import serving_app

PATHS = {"fish": fp.LIVE_PATH, "cartesia": cp.WEBSOCKET_PATH}
TTS_CAP_S = 0.2  # [tts] reconnect_max_s here, far below [mqtt]'s


@pytest.mark.parametrize("provider", ["fish", "cartesia"])
async def test_the_provider_backs_off_up_to_tts_reconnect_max_s_not_the_brokers(
    provider: str,
) -> None:
    """Every handshake answered 503: the client retries in the background, each wait at
    most the [tts] cap. With [mqtt]'s 60 s cap (before [tts] had its own) the waits double
    from 0.25-0.5 s: the third is at least 1 s."""
    refused: list[float] = []
    changed = asyncio.Condition()

    async def unavailable(request: web.Request) -> web.StreamResponse:
        async with changed:
            refused.append(asyncio.get_running_loop().time())
            changed.notify_all()
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get(PATHS[provider], unavailable)
    async with serving_app(app, PATHS[provider]) as url:
        tts = {"provider": provider, "url": url, "reference_id": "en"}
        settings = Settings(
            node_id="testnode",
            mqtt={"reconnect_max_s": 60.0},
            tts=tts | {"reconnect_max_s": TTS_CAP_S},
        )
        async with make_client(settings):
            async with asyncio.timeout(20), changed:
                await changed.wait_for(lambda: len(refused) >= 5)
    gaps = [b - a for a, b in itertools.pairwise(refused[:5])]
    assert max(gaps) < TTS_CAP_S + 0.5, gaps
