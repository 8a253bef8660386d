"""CartesiaClient against our server and scripted ones; waits are on what the server saw."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from pydantic import SecretStr

from edgespeak.base.errors import TtsProtocolError, TtsRejected, TtsUnavailable
from edgespeak.config import ServerConfig
from edgespeak.providers.cartesia import CartesiaClient
from edgespeak.server.app import build_app
from edgespeak.wire import cartesia as cp
from tests.helpers import CountingServer, espeak_pcm, serving_app

KEY = "sk_car_5e2a9d41c7"
WS, Msg = web.WebSocketResponse, dict[str, Any]
Script = Callable[["Fake", WS, Msg], Awaitable[None]]
REFUSALS = [(401, TtsRejected), (402, TtsRejected), (429, TtsRejected), (503, TtsUnavailable)]


async def send(ws: WS, *messages: Msg) -> None:
    for message in messages:
        await ws.send_str(cp.encode(message))


async def speak(fake: Fake, ws: WS, msg: Msg) -> None:
    """Answer a context's last input with two chunks and ``done``."""
    if msg.get("continue") is False:
        cid = msg["context_id"]
        await send(ws, cp.chunk(cid, b"one", step_time_ms=1), cp.chunk(cid, b"two", step_time_ms=1))
        await send(ws, cp.done(cid))


class Fake:
    """Records handshake headers and messages by connection (1, 2, ...) and closes; refuses
    the first handshakes with the statuses in ``refuse`` (``refuse_all``: every one)."""

    def __init__(
        self, script: Script = speak, *, refuse: tuple[int, ...] = (), refuse_all: int = 0
    ) -> None:
        self.script, self.refuse, self.refuse_all = script, refuse, refuse_all
        self.headers: list[Any] = []
        self.received: list[tuple[int, Msg]] = []
        self.accepted, self.closed = set[int](), set[int]()
        self.state: dict[str, Any] = {}
        self._changed = asyncio.Condition()

    def messages(self, n: int | None = None) -> list[Msg]:
        return [msg for i, msg in self.received if n in (None, i)]

    def cancels(self) -> list[str]:
        return [msg["context_id"] for msg in self.messages() if msg.get("cancel") is True]

    async def wait(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(10), self._changed:
            await self._changed.wait_for(predicate)

    async def _note(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(request.headers)
        n = len(self.headers)
        await self._note()
        if self.refuse_all or n <= len(self.refuse):
            return web.Response(status=self.refuse_all or self.refuse[n - 1])
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.accepted.add(n)
        await self._note()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    body = json.loads(msg.data)
                    self.received.append((n, body))
                    await self.script(self, ws, body)
                await self._note()
        finally:
            self.closed.add(n)
            await self._note()
        return ws


@contextlib.asynccontextmanager
async def serving(target: Fake | web.Application) -> AsyncIterator[str]:
    app = target
    if isinstance(target, Fake):
        app = web.Application()
        app.router.add_get(cp.WEBSOCKET_PATH, target.handle)
    async with serving_app(app, cp.WEBSOCKET_PATH) as url:
        yield url


async def collect(client: CartesiaClient, text: str = "Hi there.", voice: str | None = None):
    async with asyncio.timeout(20):
        return [chunk async for chunk in client.stream(text, {"reference_id": voice})]


def client(url: str, **options: Any) -> CartesiaClient:
    return CartesiaClient(url, **({"voice": "en", "reconnect_max_s": 0.2} | options))


async def test_context_inputs_and_handshake_headers() -> None:
    fake, text = Fake(), "Hello there.  How are you today?"
    options = {"token": SecretStr(KEY), "model": "sonic-2", "voice": "v-1", "language": "de"}
    options |= {"sample_rate": 24000, "version": "2024-11-13", "max_buffer_delay_ms": 0}
    async with serving(fake) as url, client(url, **options) as c:
        assert await collect(c, text) == [b"one", b"two"]
        assert await collect(c, "Again.", voice="v-2") == [b"one", b"two"]
    first, end, second, _ = fake.messages()
    assert first == {
        "context_id": first["context_id"], "model_id": "sonic-2", "transcript": text,
        "voice": {"mode": "id", "id": "v-1"}, "continue": True, "language": "de",
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000},
        "max_buffer_delay_ms": 0,
    }  # fmt: skip
    assert end == first | {"transcript": "", "continue": False}
    assert second["voice"]["id"] == "v-2" and second["context_id"] != first["context_id"]
    assert len(fake.headers) == 1  # both contexts on the one warm socket
    assert fake.headers[0]["Authorization"] == f"Bearer {KEY}"
    assert fake.headers[0]["Cartesia-Version"] == "2024-11-13"
    assert fake.cancels() == []  # both contexts ended with 'done': nothing to cancel


async def test_our_server_speaks_espeak_ngs_audio_and_two_streams_share_one_socket() -> None:
    app, upgrades = build_app(ServerConfig(voice="en")), []

    async def count(request: web.Request, response: web.StreamResponse) -> None:
        upgrades.append(request.path)

    app.on_response_prepare.append(count)
    texts = ["Someone is at the front door.", "The washing machine has finished."]
    async with serving(app) as url, client(url) as c:
        assert b"".join(await collect(c, texts[0])) == espeak_pcm(texts[0])
        both = await asyncio.gather(*(collect(c, t) for t in texts))
    assert [b"".join(chunks) for chunks in both] == [espeak_pcm(t) for t in texts]
    assert upgrades == [cp.WEBSOCKET_PATH]


@pytest.mark.parametrize(("status", "error"), REFUSALS)
async def test_refused_handshake_is_typed(status: int, error: type[Exception]) -> None:
    async with serving(Fake(refuse_all=status)) as url, client(url, token=SecretStr(KEY)) as c:
        with pytest.raises(error) as info:
            await collect(c)
    assert getattr(info.value, "status", status) == status and str(status) in str(info.value)
    assert KEY not in str(info.value)


async def test_own_server_refuses_a_wrong_key() -> None:
    async with serving(build_app(ServerConfig(voice="en", token=SecretStr(KEY)))) as url:
        async with client(url, token=SecretStr("sk_car_wrong")) as c:
            with pytest.raises(TtsRejected) as info:
                await collect(c)
        assert info.value.status == 401 and "sk_car_wrong" not in str(info.value)
        async with client(url, token=SecretStr(KEY)) as c:
            assert b"".join(await collect(c, "Hello.")) == espeak_pcm("Hello.")


async def test_429_on_the_handshake_is_retried_with_backoff_until_accepted() -> None:
    fake = Fake(refuse=(429, 429, 429))
    async with serving(fake) as url, client(url) as c:
        await asyncio.wait_for(c.wait_up(), 10)  # the background retries got through
        assert c.warm and 4 in fake.accepted
        assert await collect(c) == [b"one", b"two"]
    assert len(fake.headers) == 4  # no connection beyond the accepted one


async def test_a_refused_key_is_final_no_stream_connects_again() -> None:
    server = CountingServer(token=SecretStr(KEY))
    async with serving(server.app) as url, client(url, token=SecretStr("sk_car_wrong")) as c:
        await server.wait(lambda: len(server.paths) == 1)  # the warm-up was refused
        for _ in range(3):
            with pytest.raises(TtsRejected, match=r"API key was refused \(401\)") as info:
                await collect(c)
            assert info.value.status == 401 and "sk_car_wrong" not in str(info.value)
        assert c.refusal is not None and c.refusal.status == 401
        assert not c.connecting and c.reachable is False and not c.warm
        c.prewarm()  # asking again does not connect either
        assert not c.connecting
    assert server.paths == [cp.WEBSOCKET_PATH]  # one handshake in all


async def test_out_of_credit_blocks_streams_without_handshakes_until_its_backoff_ends() -> None:
    fake = Fake(refuse_all=402)
    async with serving(fake) as url, client(url, reconnect_first_s=60, reconnect_max_s=60) as c:
        await fake.wait(lambda: len(fake.headers) == 1)
        for _ in range(3):
            with pytest.raises(
                TtsRejected, match=r"out of credit \(402\); next attempt in"
            ) as info:
                await collect(c)
            assert info.value.status == 402
        assert c.connecting and c.refusal is None  # it will try again, later
    assert len(fake.headers) == 1


async def test_sockets_dying_young_are_reopened_with_growing_delays() -> None:
    opened: list[float] = []
    changed = asyncio.Condition()

    async def hang_up(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async with changed:
            opened.append(asyncio.get_running_loop().time())
            changed.notify_all()
        await ws.close(code=1011, message=b"internal error")
        return ws

    app, first, cap = web.Application(), 0.05, 0.4
    app.router.add_get(cp.WEBSOCKET_PATH, hang_up)
    async with serving(app) as url, client(url, reconnect_first_s=first, reconnect_max_s=cap) as c:
        async with asyncio.timeout(10), changed:
            await changed.wait_for(lambda: len(opened) >= 6)
        gaps = [b - a for a, b in itertools.pairwise(opened[:6])]
        floors = [min(cap, first * 2**n) / 2 for n in range(5)]  # never a hot loop
        assert all(gap >= 0.9 * floor for gap, floor in zip(gaps, floors, strict=True)), gaps
        assert c.reachable is True and c.refusal is None  # each handshake got through


async def test_an_error_frame_raises_its_detail_and_the_socket_serves_on() -> None:
    async def refuse_voice(fake: Fake, ws: WS, msg: Msg) -> None:
        if msg["voice"]["id"] == "nobody" and msg["continue"]:
            error = cp.error("voice 'nobody' not found", status_code=404, title="Not found")
            await send(ws, error | {"context_id": msg["context_id"]})
        elif msg["voice"]["id"] != "nobody":
            await speak(fake, ws, msg)

    fake = Fake(refuse_voice)
    async with serving(fake) as url, client(url) as c:
        with pytest.raises(TtsProtocolError, match="404 Not found: voice 'nobody' not found"):
            await collect(c, voice="nobody")
        assert await collect(c) == [b"one", b"two"]
    assert len(fake.headers) == 1 and fake.cancels() == []  # the server had ended it


async def test_an_error_frame_without_a_context_fails_the_streams_under_way() -> None:
    async def broken(fake: Fake, ws: WS, msg: Msg) -> None:
        if not msg["continue"]:
            await send(ws, {"type": "error", "status_code": 500, "message": "internal"})

    async with serving(Fake(broken)) as url, client(url) as c:
        with pytest.raises(TtsProtocolError, match="500 internal"):
            await collect(c)


async def test_server_closing_mid_stream_is_unavailable_and_the_next_stream_reconnects() -> None:
    async def dies(fake: Fake, ws: WS, msg: Msg) -> None:
        if not msg["continue"] and "died" not in fake.state:
            fake.state["died"] = True
            await send(ws, cp.chunk(msg["context_id"], b"partial", step_time_ms=1))
            await ws.close(code=1011, message=b"internal error")
        else:
            await speak(fake, ws, msg)

    fake, chunks = Fake(dies), []
    async with serving(fake) as url, client(url) as c:
        with pytest.raises(TtsUnavailable, match=r"closed \(code 1011\) before 'done'"):
            async for chunk in c.stream("Hello.", {}):
                chunks.append(chunk)
        assert chunks == [b"partial"]
        assert await collect(c) == [b"one", b"two"]
    assert fake.closed >= {1} and len(fake.headers) == 2


async def test_socket_closed_before_any_audio_is_retried_on_a_fresh_one() -> None:
    async def restarts(fake: Fake, ws: WS, msg: Msg) -> None:
        if len(fake.headers) == 1:
            await ws.close(code=1012, message=b"service restart")
        else:
            await speak(fake, ws, msg)

    fake = Fake(restarts)
    async with serving(fake) as url, client(url) as c:
        assert await collect(c) == [b"one", b"two"]
    assert len(fake.headers) == 2 and fake.messages(2)[0]["transcript"] == "Hi there."


async def test_idle_close_by_the_server_is_followed_by_a_new_socket() -> None:
    app, upgrades, changed = (
        build_app(ServerConfig(voice="en", cartesia_idle_close_s=0.3)),
        [],
        asyncio.Event(),
    )

    async def count(request: web.Request, response: web.StreamResponse) -> None:
        upgrades.append(request.path)
        changed.set()

    app.on_response_prepare.append(count)
    async with serving(app) as url, client(url) as c:
        async with asyncio.timeout(10):
            while len(upgrades) < 2:  # the first socket idled out; the client reopened one
                changed.clear()
                await changed.wait()
        assert b"".join(await collect(c, "Still here.")) == espeak_pcm("Still here.")


async def test_an_abandoned_stream_is_cancelled_and_its_late_frames_dropped() -> None:
    async def late(fake: Fake, ws: WS, msg: Msg) -> None:
        cid = msg.get("context_id")
        if msg.get("continue") is not False:
            return
        if "old" not in fake.state:  # the first context: one chunk, then nothing yet
            fake.state["old"] = cid
            await send(ws, cp.chunk(cid, b"old-1", step_time_ms=1))
            return
        old = fake.state["old"]  # the old context's frames arrive late, mixed with the new
        await send(
            ws, cp.chunk(old, b"old-2", step_time_ms=1), cp.chunk(cid, b"new", step_time_ms=1)
        )
        await send(ws, cp.done(old), cp.done(cid))

    fake = Fake(late)
    async with serving(fake) as url, client(url) as c:
        async with contextlib.aclosing(c.stream("First.", {})) as first:
            assert await anext(first) == b"old-1"  # then the consumer stops listening
        await fake.wait(lambda: fake.cancels() == [fake.state["old"]])
        assert await collect(c, "Second.") == [b"new"]
    assert len(fake.headers) == 1  # cancelling kept the socket


async def test_no_first_audio_in_time_is_unavailable_and_the_context_cancelled() -> None:
    fake = Fake(lambda *_: asyncio.sleep(0))  # accepts everything, answers nothing
    async with serving(fake) as url, client(url, first_audio_timeout_s=0.3) as c:
        with pytest.raises(TtsUnavailable, match=r"no audio within 0\.3 s"):
            await collect(c)
        await fake.wait(lambda: len(fake.cancels()) == 1)
    assert fake.cancels() == [fake.messages()[0]["context_id"]]


async def test_a_close_code_not_worth_retrying_stops_reconnecting_until_asked() -> None:
    async def policy(fake: Fake, ws: WS, msg: Msg) -> None:
        await speak(fake, ws, msg)
        if not msg["continue"] and len(fake.headers) == 1:
            await ws.close(code=1008, message=b"policy violation")

    fake = Fake(policy)
    async with serving(fake) as url, client(url) as c:
        assert await collect(c) == [b"one", b"two"]
        await fake.wait(lambda: 1 in fake.closed)
        assert await collect(c) == [b"one", b"two"]  # the next stream connects on demand
    assert len(fake.headers) == 2


async def test_no_voice_configured_is_refused_before_connecting() -> None:
    fake = Fake()
    async with serving(fake) as url, CartesiaClient(url) as c:
        with pytest.raises(TtsRejected, match="reference_id"):
            await collect(c)
    assert fake.messages() == []
