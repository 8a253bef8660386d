"""FishLiveClient against our server and scripted ones; waits are on what the server saw."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import ormsgpack
import pytest
from aiohttp import WSMsgType, web
from pydantic import SecretStr

from edgespeak.base.errors import TtsProtocolError, TtsRejected, TtsUnavailable
from edgespeak.config import ServerConfig
from edgespeak.providers.fish import FishLiveClient
from edgespeak.server.app import build_app
from edgespeak.wire import fish as fp
from tests.helpers import CountingServer, server_audio, serving_app

KEY = "sk-live-4f9a1c0e7d"
PCM = fp.build_request(format="pcm", sample_rate=22050, reference_id=None)
WS, Msg = web.WebSocketResponse, dict[str, Any]
REFUSALS = [(401, TtsRejected), (402, TtsRejected), (429, TtsRejected), (503, TtsUnavailable)]
Script = Callable[["Fake", WS, Msg], Awaitable[None]]


async def speak(fake: Fake, ws: WS, msg: Msg) -> None:
    if msg["event"] == "stop":
        for frame in (fp.audio(b"one"), fp.audio(b"two"), fp.finish("stop")):
            await ws.send_bytes(frame)
        if fake.close_after_finish:
            await ws.close()


class Fake:
    """Records headers, messages by connection (1, 2, ...), closes, and pongs to its first ping
    (the client's reader runs: a pre-warmed connection is ``warm``). ``first`` answers the first
    session, ``speak`` later ones."""

    def __init__(self, first: Script = speak, *, refuse: int = 0, close: bool = False) -> None:
        self.first, self.refuse, self.close_after_finish = first, refuse, close
        self.headers: list[Any] = []
        self.received: list[tuple[int, Msg]] = []
        self.ready, self.closed = set[int](), set[int]()
        self.at: list[float] = []  # loop time of each handshake
        self._changed = asyncio.Condition()

    def starts(self) -> list[int]:
        return [n for n, msg in self.received if msg["event"] == "start"]

    async def wait(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(10), self._changed:
            await self._changed.wait_for(predicate)

    async def _note(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(request.headers)
        self.at.append(asyncio.get_running_loop().time())
        n = len(self.headers)
        await self._note()
        if self.refuse:
            return web.Response(status=self.refuse)
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await ws.ping()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.PONG:
                    self.ready.add(n)
                elif msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    body = ormsgpack.unpackb(msg.data)
                    self.received.append((n, body))
                    await (self.first if len(self.starts()) == 1 else speak)(self, ws, body)
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
        app.router.add_get(fp.LIVE_PATH, target.handle)
    async with serving_app(app, fp.LIVE_PATH) as url:
        yield url


async def collect(client: FishLiveClient, text: str = "Hi there. Bye.", req=PCM) -> list[bytes]:
    async with asyncio.timeout(20):
        return [chunk async for chunk in client.stream(text, req)]


async def test_session_messages_and_handshake_headers() -> None:
    fake, text = Fake(), "Hello there.  How are you today? Fine, thanks."
    request = fp.build_request(format="opus", sample_rate=None, reference_id="voice-1")
    async with serving(fake) as url, FishLiveClient(url, token=SecretStr(KEY), model="s2-pro") as c:
        assert await collect(c, text, request) == [b"one", b"two"]
    session = [msg for _, msg in fake.received]
    assert [msg["event"] for msg in session] == ["start", "text", "flush", "text", "stop"]
    sent = session[0]["request"]
    assert (sent["format"], sent["sample_rate"], sent["reference_id"]) == ("opus", None, "voice-1")
    sdk_defaults = {"text": "", "chunk_length": 200, "mp3_bitrate": 128, "opus_bitrate": -1000}
    sdk_defaults |= {"references": [], "normalize": True, "latency": "balanced", "prosody": None}
    assert sdk_defaults.items() <= sent.items() and sent["top_p"] == sent["temperature"] == 0.7
    assert session[1]["text"] == "Hello there.  "  # the first sentence, its spaces kept
    assert "".join(msg["text"] for msg in session if msg["event"] == "text") == text
    assert {(h["Authorization"], h["model"]) for h in fake.headers} == {(f"Bearer {KEY}", "s2-pro")}


async def test_unknown_and_log_events_are_ignored_and_audio_kept_in_order() -> None:
    async def chatty(fake: Fake, ws: WS, msg: Msg) -> None:
        if msg["event"] == "stop":
            await ws.send_bytes(fp.audio(b"1"))
            await ws.send_str("a text frame, which servers must not send")
            odd = [{"event": "something_new", "x": [1]}, {"event": "log", "message": "hi"}]
            rest = [fp.audio(b""), fp.audio(b"2"), fp.audio(b"3"), fp.finish("stop")]
            for frame in [*map(ormsgpack.packb, odd), *rest]:
                await ws.send_bytes(frame)

    async with serving(Fake(chatty)) as url, FishLiveClient(url) as client:
        assert await collect(client) == [b"1", b"2", b"3"]
        assert await collect(client) == [b"one", b"two"]  # that session really ended


@pytest.mark.parametrize(
    ("extra", "expected"), [({"message": "no voice x"}, "no voice x"), ({"code": 7}, "7")]
)
async def test_finish_with_error_raises_protocol_error(extra: Msg, expected: str) -> None:
    async def failing(fake: Fake, ws: WS, msg: Msg) -> None:
        if msg["event"] == "stop":
            await ws.send_bytes(fp.finish("error", **extra))

    async with serving(Fake(failing)) as url, FishLiveClient(url) as client:
        with pytest.raises(TtsProtocolError, match=expected):
            await collect(client)


@pytest.mark.parametrize(("status", "error"), REFUSALS)
async def test_refused_handshake_is_typed(status: int, error: type[Exception]) -> None:
    async with serving(Fake(refuse=status)) as url, FishLiveClient(url, token=SecretStr(KEY)) as c:
        with pytest.raises(error) as info:
            await collect(c)
    assert getattr(info.value, "status", status) == status and str(status) in str(info.value)
    assert KEY not in str(info.value)


async def test_leaving_the_client_after_a_refused_warm_up_does_not_raise() -> None:
    fake = Fake(refuse=401)
    async with serving(fake) as url:
        async with FishLiveClient(url, token=SecretStr(KEY)) as client:
            await fake.wait(lambda: len(fake.headers) == 1)  # the background warm-up was refused
            with pytest.raises(TtsRejected):
                await collect(client)
        # reaching this line means __aexit__ did not re-raise the warm-up's old refusal


async def test_own_server_checks_the_bearer_token() -> None:
    app = build_app(ServerConfig(voice="en", token=SecretStr(KEY)))
    async with serving(app) as url:
        for token in (None, SecretStr("sk-wrong-key")):
            async with FishLiveClient(url, token=token) as client:
                with pytest.raises(TtsRejected) as info:
                    await collect(client)
            assert info.value.status == 401 and KEY not in str(info.value)
            assert "sk-wrong-key" not in str(info.value)
        async with FishLiveClient(url, token=SecretStr(KEY)) as client:
            audio = b"".join(await collect(client, "Hello."))
    assert len(audio) > 22050 // 10 and len(audio) % 2 == 0  # >0.05 s of s16le speech


async def test_nothing_listening_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with FishLiveClient(f"ws://127.0.0.1:{port}{fp.LIVE_PATH}") as client:
        with pytest.raises(TtsUnavailable, match="cannot connect"):
            await collect(client)


async def test_keep_open_server_serves_successive_streams_on_one_connection() -> None:
    app, upgraded, upgrades = (
        build_app(ServerConfig(voice="en", close_after_finish=False)),
        asyncio.Event(),
        [],
    )

    async def count(request: web.Request, response: web.StreamResponse) -> None:
        upgrades.append(response)
        upgraded.set()

    app.on_response_prepare.append(count)
    async with serving(app) as url, FishLiveClient(url) as client:
        await asyncio.wait_for(upgraded.wait(), 10)  # the warm-up connection is being opened
        first, second = await collect(client, "One."), await collect(client, "Two. Three.")
        assert first and second and client.warm
    assert len(upgrades) == 1


async def test_stream_right_after_entering_shares_the_warming_connection() -> None:
    fake = Fake()
    async with serving(fake) as url, FishLiveClient(url) as client:
        assert await collect(client) == [b"one", b"two"]
        assert await collect(client) == [b"one", b"two"]
    assert len(fake.headers) == 1, f"{len(fake.headers)} connections for two sessions"


async def test_close_after_finish_has_the_next_connection_warm_before_the_next_stream() -> None:
    fake = Fake(close=True)
    async with serving(fake) as url, FishLiveClient(url) as client:
        await fake.wait(lambda: 1 in fake.ready)
        assert await collect(client) == [b"one", b"two"]
        await fake.wait(lambda: 1 in fake.closed and 2 in fake.ready)
        assert client.warm and len(fake.headers) == 2  # opened before the next stream is asked
        assert await collect(client) == [b"one", b"two"]
        assert fake.starts() == [1, 2]  # the second session used the pre-warmed socket


async def test_no_first_audio_in_time_is_unavailable() -> None:
    fake = Fake(lambda *_: asyncio.sleep(0))  # accepts everything, answers nothing
    async with serving(fake) as url, FishLiveClient(url, first_audio_timeout_s=0.3) as client:
        with pytest.raises(TtsUnavailable, match=r"no audio within 0\.3 s"):
            await collect(client)
        await fake.wait(lambda: fake.starts()[0] in fake.closed)  # the session's socket dropped


async def test_server_dying_mid_stream_is_unavailable_and_the_client_recovers() -> None:
    async def dies(fake: Fake, ws: WS, msg: Msg) -> None:
        if msg["event"] == "stop":
            await ws.send_bytes(fp.audio(b"partial"))
            await ws.close()

    fake, chunks = Fake(dies), []
    async with serving(fake) as url, FishLiveClient(url) as client:
        await fake.wait(lambda: 1 in fake.ready)
        with pytest.raises(TtsUnavailable, match="closed before 'finish'"):
            async for chunk in client.stream("Hello. World.", PCM):
                chunks.append(chunk)
        assert chunks == [b"partial"]
        assert await collect(client) == [b"one", b"two"]


async def test_warm_socket_closed_before_any_audio_is_retried_on_a_fresh_one() -> None:
    fake = Fake(lambda _, ws, __: ws.close())  # closes as the first session starts
    async with serving(fake) as url, FishLiveClient(url) as client:
        await fake.wait(lambda: 1 in fake.ready)
        assert await collect(client) == [b"one", b"two"]
    assert fake.starts() == [1, 2]


async def test_consumer_stopping_early_closes_the_socket_and_prewarms_another() -> None:
    async def endless(fake: Fake, ws: WS, msg: Msg) -> None:
        if msg["event"] == "stop":
            for chunk in (b"1", b"2", b"3"):  # and no 'finish': only closing ends it
                await ws.send_bytes(fp.audio(chunk))

    fake = Fake(endless)
    async with serving(fake) as url, FishLiveClient(url) as client:
        await fake.wait(lambda: 1 in fake.ready)
        async for chunk in client.stream("Hello. World.", PCM):
            assert chunk == b"1"
            break
        await fake.wait(lambda: 1 in fake.closed and 2 in fake.ready)
        assert client.warm
        assert await collect(client) == [b"one", b"two"]
        assert fake.starts() == [1, 2]


# --- Refusals, faults and both connection lifetimes, against our own server's test switches ---


async def test_a_refused_key_is_final_no_stream_connects_again() -> None:
    server = CountingServer(test_refuse_status=401)
    async with serving(server.app) as url, FishLiveClient(url, token=SecretStr(KEY)) as client:
        await server.wait(lambda: len(server.paths) == 1)  # the warm-up was refused
        for _ in range(3):
            with pytest.raises(TtsRejected, match=r"API key was refused \(401\)") as info:
                await collect(client)
            assert info.value.status == 401 and KEY not in str(info.value)
        assert client.refusal is not None and client.refusal.status == 401
        assert not client.connecting and client.reachable is False and not client.warm
        client.prewarm()  # asking again does not connect either
        assert not client.connecting
    assert server.paths == [fp.LIVE_PATH]  # one handshake in all


async def test_out_of_credit_blocks_streams_without_handshakes_until_its_backoff_ends() -> None:
    server = CountingServer(test_refuse_status=402)
    async with serving(server.app) as url, FishLiveClient(url, reconnect_first_s=60) as client:
        await server.wait(lambda: len(server.paths) == 1)
        for _ in range(3):
            with pytest.raises(
                TtsRejected, match=r"out of credit \(402\); next attempt in"
            ) as info:
                await collect(client)
            assert info.value.status == 402
        assert client.connecting and client.refusal is None  # it will try again, later
    assert len(server.paths) == 1


@pytest.mark.parametrize("status", [429, 503])
async def test_rate_limit_and_server_errors_are_retried_with_growing_delays(status: int) -> None:
    fake, first, cap = Fake(refuse=status), 0.05, 0.4
    async with (
        serving(fake) as url,
        FishLiveClient(url, reconnect_first_s=first, reconnect_max_s=cap) as client,
    ):
        await fake.wait(lambda: len(fake.at) >= 6)  # the background loop keeps trying
        gaps = [b - a for a, b in itertools.pairwise(fake.at[:6])]
        # Each delay is at least half its ceiling (first, doubling, capped): never a hot loop.
        floors = [min(cap, first * 2**n) / 2 for n in range(5)]
        assert all(gap >= 0.9 * floor for gap, floor in zip(gaps, floors, strict=True)), gaps
        with pytest.raises(TtsRejected if status == 429 else TtsUnavailable, match=str(status)):
            await collect(client)
        fake.refuse = 0
        await asyncio.wait_for(client.wait_up(), 10)
        assert await collect(client) == [b"one", b"two"]
        assert client.reachable and client.refusal is None


@pytest.mark.parametrize("fault", ["error_before_audio", "error_after_audio"])
async def test_a_session_ending_with_error_carries_the_servers_detail(fault: str) -> None:
    server, chunks = CountingServer(test_session_fault=fault), []
    async with serving(server.app) as url, FishLiveClient(url) as client:
        with pytest.raises(TtsProtocolError) as info:
            async for chunk in client.stream("Hello there. How are you?", PCM):
                chunks.append(chunk)
    assert f"test switch: {fault}" in str(info.value)
    assert f"test_session_fault={fault!r}" in str(info.value) and "status=500" in str(info.value)
    assert bool(chunks) == (fault == "error_after_audio")


async def test_server_closing_mid_stream_is_unavailable_and_a_new_socket_is_warmed() -> None:
    server, chunks = CountingServer(test_session_fault="close_after_audio"), []
    async with serving(server.app) as url, FishLiveClient(url) as client:
        with pytest.raises(TtsUnavailable, match="closed before 'finish'"):
            async for chunk in client.stream("Hello there. How are you?", PCM):
                chunks.append(chunk)
        await server.wait(lambda: len(server.paths) == 2)  # pre-warmed at once
    assert chunks and len(b"".join(chunks)) % 2 == 0


@pytest.mark.parametrize("close", [False, True])
async def test_our_server_in_both_lifetimes_serves_successive_streams(close: bool) -> None:
    server = CountingServer(close_after_finish=close)
    async with serving(server.app) as url, FishLiveClient(url) as client:
        first = b"".join(await collect(client, "One."))
        if close:  # the next connection is opened before it is asked for (and taken once up)
            await server.wait(lambda: len(server.paths) == 2)
        else:
            assert client.warm  # the same socket, parked for the next session
        second = b"".join(await collect(client, "Two. Three."))
        handshakes = len(server.paths)
        expected = [
            await server_audio(url, t, fmt="pcm", rate=22050) for t in ("One.", "Two. Three.")
        ]
    assert [first, second] == expected and len(first) > 22050 // 4
    assert handshakes == 1 if not close else handshakes in (2, 3)  # 3: pre-warmed after the 2nd


async def test_a_refused_start_is_answered_once_and_the_socket_serves_the_next_session() -> None:
    async with (
        serving(build_app(ServerConfig(voice="en"))) as url,
        aiohttp.ClientSession() as http,
    ):
        async with http.ws_connect(url) as ws:
            mp3 = fp.build_request(format="mp3", sample_rate=None, reference_id=None)
            for frame in (fp.start(mp3), fp.text("Hi."), fp.flush(), fp.stop()):
                await ws.send_bytes(frame)
            for frame in (fp.start(PCM), fp.text("Hi."), fp.stop()):
                await ws.send_bytes(frame)
            events = []
            async for msg in ws:
                body = ormsgpack.unpackb(msg.data)
                events.append((body["event"], body.get("reason")))
                if len([e for e in events if e[0] == "finish"]) == 2:
                    break
    finishes = [e for e in events if e[0] == "finish"]
    assert finishes == [("finish", "error"), ("finish", "stop")]
    assert events[0] == ("finish", "error") and ("audio", None) in events
