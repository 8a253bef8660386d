"""The local server's Cartesia WebSocket, driven by the official ``cartesia`` SDK and raw frames.

The SDK (PyPI ``cartesia[websockets]`` 4.x) runs the continuation example of
docs/protocols.md §7 against our server; the audio is compared with what espeak-ng itself says.
Protocol details the SDK hides (field checks, errors, cancel, idle close) use a plain aiohttp
client sending JSON frames.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
import soxr
from aiohttp import WSMsgType, web
from cartesia import AsyncCartesia, Cartesia
from pydantic import SecretStr

from edgespeak.config import ServerConfig
from edgespeak.server.app import build_app
from edgespeak.wire import cartesia as cp
from tests.helpers import espeak_pcm, snr_db

KEY = "sk_car_3b9d0c7e1f"
SDK_VOICE = {"mode": "id", "id": "6ccbfb76-1fc6-48f7-b71d-91ac6298247b"}  # the seed's voice
ROAD = ["The road ", "goes ever ", "on and ", "on."]
FEAR = ["The only thing we have to fear ", "is ", "fear itself."]
Msg = dict[str, Any]


@contextlib.asynccontextmanager
async def local_server(**config: Any) -> AsyncIterator[int]:
    """Our server (both protocols) on 127.0.0.1; yields its port."""
    runner = web.AppRunner(build_app(ServerConfig(voice="en", **config)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


def sdk_clients(port: int, key: str = KEY) -> dict[str, str]:
    return {
        "api_key": key,
        "base_url": f"http://127.0.0.1:{port}",
        "websocket_base_url": f"ws://127.0.0.1:{port}",
    }


def continuation_example(port: int) -> tuple[bytes, list[str], set[str | None]]:
    """``tts_websocket_continuations`` of docs/protocols.md §7, collecting instead of writing a
    file: (audio, response types, context ids of the responses)."""
    client = Cartesia(**sdk_clients(port))
    audio, types, ids = bytearray(), [], set()
    with client.tts.websocket_connect() as ws:
        ctx = ws.context(
            model_id="sonic-latest",
            voice=SDK_VOICE,
            output_format={"container": "raw", "encoding": "pcm_s16le", "sample_rate": 44100},
            language="en",
        )
        for part in ROAD:
            ctx.push(part)
        ctx.no_more_inputs()
        for response in ctx.receive():
            types.append(response.type)
            ids.add(getattr(response, "context_id", None))
            if response.type == "chunk" and response.audio:
                audio += response.audio
            elif response.type == "error":
                raise AssertionError(f"error: {response.message or response.title}")
    return bytes(audio), types, ids


async def test_sdk_continuation_example_speaks_the_whole_transcript_at_44100() -> None:
    async with local_server(token=SecretStr(KEY)) as port:
        audio, types, ids = await asyncio.to_thread(continuation_example, port)
    assert types[-1] == "done" and set(types) == {"chunk", "done"}
    assert len(ids) == 1 and None not in ids
    spoken = espeak_pcm("".join(ROAD))  # espeak-ng's own 22050 Hz rendering of the whole text
    assert abs(len(audio) / 2 / 44100 - len(spoken) / 2 / 22050) < 0.005  # same duration
    reference = soxr.resample(np.frombuffer(spoken, "<i2"), 22050, 44100).astype("<i2")
    n = min(len(reference), len(audio) // 2)
    assert snr_db(reference[:n].tobytes(), audio[: n * 2]) > 30  # the same speech, resampled


async def test_async_sdk_example_is_espeak_ngs_own_audio_at_its_rate() -> None:
    async with local_server() as port:
        client = AsyncCartesia(**sdk_clients(port))
        audio = bytearray()
        async with client.tts.websocket_connect() as ws:
            ctx = ws.context(
                model_id="sonic-latest",
                voice=SDK_VOICE,
                output_format={"container": "raw", "encoding": "pcm_s16le", "sample_rate": 22050},
            )
            for transcript in FEAR:
                await ctx.push(transcript)
            await ctx.no_more_inputs()
            async for response in ctx.receive():
                assert response.type != "error", response
                if response.type == "chunk" and response.audio:
                    audio += response.audio
        await client.close()
    assert bytes(audio) == espeak_pcm("".join(FEAR))


async def test_two_contexts_on_one_socket_each_get_only_their_own_audio() -> None:
    async def receive(ctx: Any) -> tuple[bytes, set[str]]:
        audio, ids = bytearray(), set()
        async for response in ctx.receive():
            ids.add(response.context_id)
            if response.type == "chunk" and response.audio:
                audio += response.audio
        return bytes(audio), ids

    fmt = {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 22050}
    async with local_server() as port:
        client = AsyncCartesia(**sdk_clients(port))
        async with client.tts.websocket_connect() as ws:
            road = ws.context("road", model_id="sonic-2", voice=SDK_VOICE, output_format=fmt)
            fear = ws.context("fear", model_id="sonic-2", voice=SDK_VOICE, output_format=fmt)
            for a, b in zip(ROAD, [*FEAR, ""], strict=True):  # interleaved inputs
                await road.push(a)
                await fear.push(b)
            await fear.no_more_inputs()
            await road.no_more_inputs()
            (road_audio, road_ids), (fear_audio, fear_ids) = await asyncio.gather(
                receive(road), receive(fear)
            )
        await client.close()
    assert (road_ids, fear_ids) == ({"road"}, {"fear"})
    assert road_audio == espeak_pcm("".join(ROAD))
    assert fear_audio == espeak_pcm("".join(FEAR))


def request(context_id: str, transcript: str, more: bool, **changes: Any) -> str:
    body = cp.generation_request(
        context_id=context_id, model_id="sonic-2", voice_id="en", transcript=transcript,
        sample_rate=16000, continue_=more, max_buffer_delay_ms=0,
    )  # fmt: skip
    return json.dumps(body | changes)


async def frames_until(ws: aiohttp.ClientWebSocketResponse, *types: str) -> list[Msg]:
    """Frames received up to and including the first of one of ``types``."""
    out: list[Msg] = []
    async with asyncio.timeout(20):
        while not out or out[-1]["type"] not in types:
            msg = await ws.receive()
            assert msg.type == WSMsgType.TEXT, msg
            out.append(json.loads(msg.data))
    return out


def audio_of(frames: list[Msg], context_id: str) -> bytes:
    chunks = [f for f in frames if f["type"] == "chunk" and f["context_id"] == context_id]
    return b"".join(base64.b64decode(f["data"]) for f in chunks)


async def test_flush_speaks_the_buffer_and_acknowledges_then_done_ends() -> None:
    async with local_server() as port, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"ws://127.0.0.1:{port}{cp.WEBSOCKET_PATH}") as ws:
            await ws.send_str(request("c1", "Hello there.", True, flush=True))
            first = await frames_until(ws, "flush_done")
            await ws.send_str(request("c1", " Goodbye.", True))
            await ws.send_str(request("c1", "", False))
            rest = await frames_until(ws, "done")
    assert first[-1] == cp.flush_done("c1", 1)
    assert all(f["flush_id"] == 1 for f in first[:-1]) and audio_of(first, "c1")
    assert rest[-1] == cp.done("c1") and all(f["type"] == "chunk" for f in rest[:-1])
    assert all(f["status_code"] == 206 and f["done"] is False for f in first[:-1] + rest[:-1])
    rate = 16000  # resampled from espeak-ng's 22050 Hz
    spoken_s = (len(espeak_pcm("Hello there.")) + len(espeak_pcm("Goodbye."))) / 2 / 22050
    assert abs(len(audio_of(first + rest, "c1")) / 2 / rate - spoken_s) < 0.005


@pytest.mark.parametrize(
    ("second", "field"),
    [
        ({"output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 8000}},
         "output_format"),
        ({"voice": {"mode": "id", "id": "de"}}, "voice"),
        ({"language": "de"}, "language"),
    ],
)  # fmt: skip
async def test_an_input_changing_a_field_fails_only_its_context(second: Msg, field: str) -> None:
    async with local_server() as port, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"ws://127.0.0.1:{port}{cp.WEBSOCKET_PATH}") as ws:
            await ws.send_str(request("bad", "Part one, ", True))
            await ws.send_str(request("good", "Still fine.", False))
            await ws.send_str(request("bad", "part two.", True, **second))
            await ws.send_str(request("bad", "", False))  # the rest of the failed context
            frames = await frames_until(ws, "error")
            frames += await frames_until(ws, "done")
    error = next(f for f in frames if f["type"] == "error")
    assert (error["context_id"], error["status_code"]) == ("bad", 400)
    assert repr(field) in error["message"] and error["done"] is True
    assert [f["context_id"] for f in frames if f["type"] == "done"] == ["good"]
    assert not audio_of(frames, "bad") and audio_of(frames, "good")


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"output_format": {"container": "raw", "encoding": "pcm_mulaw", "sample_rate": 8000}},
         "encoding 'pcm_mulaw' is not supported"),
        ({"output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 11025}},
         "sample_rate must be one of"),
        ({"voice": {"mode": "id", "id": "no-such-voice"}}, "unknown voice 'no-such-voice'"),
        ({"voice": {"mode": "embedding", "embedding": [0.1]}}, "other modes are unsupported"),
        ({"max_buffer_delay_ms": 9000}, "max_buffer_delay_ms must be 0..5000"),
    ],
)  # fmt: skip
async def test_unsupported_requests_get_a_specific_error(changes: Msg, complaint: str) -> None:
    async with local_server() as port, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"ws://127.0.0.1:{port}{cp.WEBSOCKET_PATH}") as ws:
            await ws.send_str(request("c1", "Hello.", False, **changes))
            frames = await frames_until(ws, "error")
            await ws.send_str(request("c2", "Hello.", False))  # the socket still serves
            frames += await frames_until(ws, "done")
    assert frames[0]["context_id"] == "c1" and complaint in frames[0]["message"]
    assert audio_of(frames, "c2")


async def test_frames_without_a_context_get_an_error_without_one() -> None:
    async with local_server() as port, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"ws://127.0.0.1:{port}{cp.WEBSOCKET_PATH}") as ws:
            await ws.send_str("{not json")
            bad_json = await frames_until(ws, "error")
            await ws.send_str(json.dumps({"transcript": "Hi.", "continue": False}))
            no_context = await frames_until(ws, "error")
    assert "context_id" not in bad_json[0] and "not valid JSON" in bad_json[0]["message"]
    assert "context_id" not in no_context[0] and "'context_id'" in no_context[0]["message"]
    assert bad_json[0]["status_code"] == no_context[0]["status_code"] == 400


async def test_an_input_after_the_context_ended_is_an_error_for_it() -> None:
    async with local_server() as port, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"ws://127.0.0.1:{port}{cp.WEBSOCKET_PATH}") as ws:
            await ws.send_str(request("c1", "A rather long sentence to speak. " * 5, False))
            await ws.send_str(request("c1", "More.", False))
            frames = await frames_until(ws, "error", "done")
    assert frames[-1]["type"] == "error" and frames[-1]["context_id"] == "c1"
    assert "has ended" in frames[-1]["message"]


async def test_cancel_stops_only_that_context() -> None:
    long_text = "This announcement goes on and on, sentence after sentence. " * 20
    async with local_server() as port, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"ws://127.0.0.1:{port}{cp.WEBSOCKET_PATH}") as ws:
            await ws.send_str(request("long", long_text, False))
            first = await frames_until(ws, "chunk")
            await ws.send_str(json.dumps(cp.cancel("long")))
            # The same text again, started later: uncancelled, "long" would be done first.
            await ws.send_str(request("probe", long_text, False))
            rest = await frames_until(ws, "done")
    assert first[0]["context_id"] == "long"
    assert rest[-1] == cp.done("probe")
    assert [f for f in rest if f["type"] != "chunk"] == [rest[-1]]  # nothing ended "long"
    assert len(audio_of(first + rest, "long")) < len(audio_of(rest, "probe")) / 2  # cut short


@pytest.mark.parametrize("how", ["bearer", "x-api-key", "query"])
async def test_the_key_is_accepted_in_each_form_and_a_wrong_one_refused(how: str) -> None:
    def offer(key: str) -> tuple[dict[str, str], str]:
        if how == "bearer":
            return {"Authorization": f"Bearer {key}"}, ""
        if how == "x-api-key":
            return {"X-API-Key": key}, ""
        return {}, f"?api_key={key}&cartesia_version=2025-04-16"

    async with local_server(token=SecretStr(KEY)) as port, aiohttp.ClientSession() as http:
        url = f"ws://127.0.0.1:{port}{cp.WEBSOCKET_PATH}"
        for key in ("sk_wrong", ""):
            headers, query = offer(key)
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await http.ws_connect(url + query, headers=headers)
            assert info.value.status == 401
        headers, query = offer(KEY)
        async with http.ws_connect(url + query, headers=headers) as ws:
            await ws.send_str(request("c1", "Hi.", False))
            assert audio_of(await frames_until(ws, "done"), "c1")


async def test_an_idle_socket_is_closed_even_while_pinging() -> None:
    idle_s = 0.5
    async with local_server(cartesia_idle_close_s=idle_s) as port, aiohttp.ClientSession() as http:
        url = f"ws://127.0.0.1:{port}{cp.WEBSOCKET_PATH}"
        async with http.ws_connect(url, heartbeat=0.05) as ws:
            await ws.send_str(request("c1", "Open, never ended, ", True))
            opened = time.monotonic()
            async with asyncio.timeout(10):
                msg = await ws.receive()
            lived = time.monotonic() - opened
    assert msg.type == WSMsgType.CLOSE and ws.close_code == 1000 and msg.extra == "idle timeout"
    assert idle_s <= lived < idle_s + 5
