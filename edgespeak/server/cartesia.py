"""The local server's Cartesia TTS WebSocket, ``GET /tts/websocket`` (espeak-ng or Piper).

Protocol as in docs/protocols.md §6 (see :mod:`edgespeak.wire.cartesia`). One socket
multiplexes contexts: each ``context_id`` buffers its transcript across ``continue: true``
inputs and synthesises what is buffered on ``flush`` (then ``flush_done``) and when an input
says ``continue: false`` (then ``done``). Contexts run concurrently; a context's frames keep
their order. ``{context_id, cancel: true}`` stops that context (nothing more is sent for it).

A bad input (different fields than the context's first input, an input after the context
ended, an unsupported encoding, sample rate or voice) gets an ``error`` frame with the
``status_code`` and ``context_id``, and ends only that context; its later inputs are ignored
up to one with ``continue: false``. A frame that is not a JSON object with a ``context_id``
gets an ``error`` without one.

What this server does differently from Cartesia's: ``voice.id`` names one of its voices
(espeak-ng or Piper, :mod:`edgespeak.server.engines`); a Cartesia voice id (a UUID) speaks in
the server's default voice, so the SDK examples run unchanged.
``model_id``, ``language``, ``max_buffer_delay_ms`` and the timestamp options are accepted and
ignored (nothing is synthesised before ``flush`` or ``continue: false``); ``pcm_mulaw`` and
``pcm_alaw`` are refused. Auth: the ``[server] token`` as ``Authorization: Bearer``,
``X-API-Key`` or the ``api_key`` query parameter (checked, with ``[server]
test_refuse_status``, by :func:`~edgespeak.server.refusals.refusal_response`);
``Cartesia-Version`` (or ``cartesia_version``) is accepted, not required. A socket that
neither received an input nor generated audio for ``[server] cartesia_idle_close_s`` seconds
is closed (code 1000, reason "idle timeout"), as Cartesia does after 5 minutes; pings do not
count as activity.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from edgespeak.base.errors import EdgespeakError, RequestError
from edgespeak.base.pcm import FrameCarry
from edgespeak.config import ServerConfig
from edgespeak.server.capacity import Capacity
from edgespeak.server.engines import LocalEngines, VoiceChoice
from edgespeak.server.output import OutputStream
from edgespeak.server.refusals import refusal_response
from edgespeak.wire import cartesia as cp

log = logging.getLogger(__name__)

ENCODINGS = ("pcm_s16le", "pcm_f32le")  # what this server produces
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_END = None  # work item: the context's last input arrived


class InputError(RequestError):
    """An input is refused: an ``error`` frame with ``status_code``, ``title`` and this
    message."""

    def __init__(
        self, message: str, status_code: int = 400, title: str = "Invalid request"
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.title = title


class _Encoder:
    """Engine PCM (s16le mono at the engine's rate) → ``encoding`` at ``rate_hz`` Hz."""

    def __init__(self, encoding: str, rate_hz: int, engine_rate_hz: int) -> None:
        self._pcm = OutputStream("pcm", rate_hz, engine_rate_hz)
        self._f32 = encoding == "pcm_f32le"
        self._carry = FrameCarry()

    def _convert(self, pcm: bytes) -> bytes:
        if not self._f32:
            return pcm
        pcm = self._carry.whole(pcm)
        samples = np.frombuffer(pcm, dtype="<i2").astype("<f4") / 32768.0
        return samples.astype("<f4").tobytes()

    def write(self, pcm: bytes) -> bytes:
        return self._convert(self._pcm.write(pcm))

    def close(self) -> bytes:
        return self._convert(self._pcm.close())


class _Context:
    """One context: its fixed fields, the buffered transcript and the task speaking it."""

    def __init__(self, context_id: str, fields: dict[str, Any], voice: VoiceChoice) -> None:
        self.id = context_id
        self.fields = fields
        self.voice = voice
        fmt = fields["output_format"]
        self.encoding: str = fmt["encoding"]
        self.rate_hz: int = fmt["sample_rate"]
        self.buffer = ""
        self.chars = 0
        self.flushes = 0
        self.ended = False
        self.work: asyncio.Queue[tuple[str, int | None] | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.speaking = False
        self.session = False  # counted as a session in the server's Capacity

    @property
    def busy(self) -> bool:
        """Generating, or with input waiting to be: the socket is not idle."""
        return self.speaking or not self.work.empty()


def _fields(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in cp.PER_INPUT_FIELDS}


class CartesiaHandler:
    """Serves ``/tts/websocket`` with ``engine``; ``config`` gives token, limits, idle close;
    ``capacity`` (shared with the server's other handlers) counts each socket as a connection
    and each context as a session, from its first input until it ends."""

    def __init__(self, config: ServerConfig, engines: LocalEngines, capacity: Capacity) -> None:
        self._config = config
        self._engines = engines
        self._capacity = capacity

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Upgrade to a WebSocket (401 without the right key in any of Cartesia's forms,
        ``test_refuse_status`` when set, 429 when ``max_connections`` are open) and serve its
        contexts."""
        if (refused := refusal_response(self._config, request, cartesia=True)) is not None:
            return refused
        version = request.headers.get("Cartesia-Version") or request.query.get("cartesia_version")
        with self._capacity.connection():
            ws = web.WebSocketResponse(heartbeat=None, max_msg_size=16 * 1024 * 1024)
            await ws.prepare(request)
            log.debug("Cartesia socket opened (cartesia-version %s)", version)
            await _Connection(ws, self._config, self._engines, self._capacity).serve()
            return ws


class _Connection:
    """One socket: reads inputs, runs one task per context, closes when idle."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        config: ServerConfig,
        engines: LocalEngines,
        capacity: Capacity,
    ):
        self._ws = ws
        self._config = config
        self._engines = engines
        self._capacity = capacity
        self._contexts: dict[str, _Context] = {}
        self._failed: set[str] = set()  # contexts whose inputs are ignored up to their end
        self._send_lock = asyncio.Lock()
        self._last_activity = time.monotonic()

    async def serve(self) -> None:
        idle_s = self._config.cartesia_idle_close_s
        try:
            while not self._ws.closed:
                try:
                    async with asyncio.timeout(self._last_activity + idle_s - time.monotonic()):
                        msg = await self._ws.receive()
                except TimeoutError:
                    if any(c.busy for c in self._contexts.values()):
                        self._last_activity = time.monotonic()
                    elif time.monotonic() >= self._last_activity + idle_s:
                        log.info("closing a Cartesia socket idle for %g s", idle_s)
                        await self._ws.close(code=WSCloseCode.OK, message=b"idle timeout")
                    continue
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self._last_activity = time.monotonic()
                    await self._dispatch(msg.data)
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    break
                elif msg.type == WSMsgType.ERROR:
                    log.debug("Cartesia socket error: %s", self._ws.exception())
                    break
        finally:
            tasks = [c.task for c in self._contexts.values() if c.task is not None]
            for task in tasks:
                task.cancel()  # the client is gone: stop synthesising (kills espeak-ng)
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await task

    async def _send(self, message: Mapping[str, Any]) -> None:
        async with self._send_lock:
            await self._ws.send_str(cp.encode(message))

    async def _dispatch(self, data: str | bytes) -> None:
        try:
            body = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            await self._send(cp.error(f"not valid JSON: {exc}", status_code=400))
            return
        context_id = body.get("context_id") if isinstance(body, dict) else None
        if not isinstance(context_id, str) or not context_id:
            message = "every message needs a non-empty string 'context_id'"
            await self._send(cp.error(message, status_code=400))
            return
        assert isinstance(body, dict)
        if body.get("cancel") is True:
            self._cancel(context_id)
            return
        try:
            self._input(context_id, body)
        except InputError as exc:
            await self._fail(context_id, exc, body.get("continue") is True)

    def _cancel(self, context_id: str) -> None:
        ctx = self._contexts.pop(context_id, None)
        self._failed.discard(context_id)
        if ctx is not None and ctx.task is not None:
            self._release(ctx)  # now: the client may open the next context at once
            ctx.task.cancel()
            log.info("context %s cancelled", context_id)

    def _release(self, ctx: _Context) -> None:
        """Give the context's session back to the Capacity (once, however it ended)."""
        if ctx.session:
            ctx.session = False
            self._capacity.end_session()

    async def _fail(self, context_id: str, exc: InputError, more: bool) -> None:
        """Send ``error`` for the context and end it; ignore its inputs up to the last one
        when ``more`` (the refused input said ``continue: true``)."""
        log.warning("context %s failed: %s", context_id, exc)
        self._cancel(context_id)
        if more:
            self._failed.add(context_id)
        await self._send(
            cp.error(str(exc), status_code=exc.status_code, context_id=context_id, title=exc.title)
        )

    def _input(self, context_id: str, body: dict[str, Any]) -> None:
        """Add one generation input. Raises InputError for a bad one."""
        if context_id in self._failed:
            if body.get("continue") is not True:
                self._failed.discard(context_id)
            return
        transcript = body.get("transcript")
        if not isinstance(transcript, str):
            raise InputError("'transcript' must be a string")
        more, flush = body.get("continue", False), body.get("flush", False)
        if not isinstance(more, bool) or not isinstance(flush, bool):
            raise InputError("'continue' and 'flush' must be true or false")
        ctx = self._contexts.get(context_id)
        if ctx is None:
            ctx = self._open(context_id, body)
        elif ctx.ended:
            raise InputError(f"context {context_id!r} has ended (an input said continue: false)")
        elif (changed := _changed(ctx.fields, _fields(body))) is not None:
            raise InputError(
                f"{changed!r} differs from the context's first input; only 'transcript', "
                "'continue' and 'flush' may change within a context"
            )
        ctx.chars += len(transcript)
        if ctx.chars > self._config.max_text_chars:
            raise InputError(f"context text exceeds {self._config.max_text_chars} characters")
        ctx.buffer += transcript
        if flush and more:
            ctx.flushes += 1
            ctx.work.put_nowait((ctx.buffer, ctx.flushes))
            ctx.buffer = ""
        if not more:
            ctx.ended = True
            ctx.work.put_nowait((ctx.buffer, None))
            ctx.buffer = ""
            ctx.work.put_nowait(_END)

    def _open(self, context_id: str, body: dict[str, Any]) -> _Context:
        """A new context from its first input, its fields checked, counted as a session.
        Raises InputError (429 when ``max_sessions`` are running)."""
        model = body.get("model_id")
        if not isinstance(model, str) or not model:
            raise InputError("'model_id' must be a non-empty string")
        fmt = body.get("output_format")
        if not isinstance(fmt, dict) or fmt.get("container", "raw") != "raw":
            raise InputError("'output_format' must be {container: raw, encoding, sample_rate}")
        if fmt.get("encoding") not in ENCODINGS:
            raise InputError(
                f"encoding {fmt.get('encoding')!r} is not supported by this server; "
                f"use one of {ENCODINGS}"
            )
        if fmt.get("sample_rate") not in cp.SAMPLE_RATES:
            raise InputError(f"sample_rate must be one of {cp.SAMPLE_RATES} Hz")
        delay = body.get("max_buffer_delay_ms", 0)
        if type(delay) is not int or not 0 <= delay <= cp.MAX_BUFFER_DELAY_MS:
            raise InputError(f"max_buffer_delay_ms must be 0..{cp.MAX_BUFFER_DELAY_MS}")
        voice = self._voice(body.get("voice"))
        if not self._capacity.begin_session():  # a context synthesising is a session
            raise InputError(self._capacity.sessions_full(), 429, "Too many requests")
        ctx = _Context(context_id, _fields(body), voice)
        ctx.session = True
        ctx.task = asyncio.create_task(self._speak(ctx), name=f"cartesia-{context_id[:8]}")
        ctx.task.add_done_callback(lambda _: self._release(ctx))  # also if it never ran
        self._contexts[context_id] = ctx
        return ctx

    def _voice(self, voice: object) -> VoiceChoice:
        """The server's voice for ``voice`` ({mode: id, id}); a UUID = the server's default.
        Raises InputError for another mode or an id that is neither a voice nor a UUID."""
        if not isinstance(voice, dict) or voice.get("mode", "id") != "id":
            raise InputError("'voice' must be {mode: 'id', id: …}; other modes are unsupported")
        voice_id = voice.get("id")
        if not isinstance(voice_id, str) or not voice_id:
            raise InputError("'voice.id' must be a non-empty string")
        if _UUID.match(voice_id):
            return self._engines.default  # a Cartesia voice id: speak in the server's voice
        try:
            return self._engines.choose(voice_id)
        except EdgespeakError as exc:
            raise InputError(str(exc)) from None

    async def _speak(self, ctx: _Context) -> None:
        """Synthesise the context's segments in order; ``done`` after the last."""
        encoder = _Encoder(ctx.encoding, ctx.rate_hz, self._engines.rate_hz(ctx.voice))
        try:
            while (item := await ctx.work.get()) is not _END:
                text, flush_id = item
                ctx.speaking = True
                await self._segment(ctx, encoder, text.strip(), flush_id)
                if flush_id is not None:
                    await self._send(cp.flush_done(ctx.id, flush_id))
                ctx.speaking = False
                self._last_activity = time.monotonic()
            tail = encoder.close()
            if tail:
                await self._send(cp.chunk(ctx.id, tail, step_time_ms=0.0))
            await self._send(cp.done(ctx.id))
            log.info("context %s done: %d characters", ctx.id, ctx.chars)
        except EdgespeakError as exc:
            log.warning("context %s failed: %s", ctx.id, exc)
            with contextlib.suppress(ConnectionError):
                await self._send(cp.error(str(exc), status_code=500, context_id=ctx.id,
                                          title="Generation failed"))  # fmt: skip
        except ConnectionError:
            log.debug("context %s: the client left while audio was being sent", ctx.id)
        finally:
            self._release(ctx)  # before the client, told 'done', can open the next context
            if self._contexts.get(ctx.id) is ctx:
                del self._contexts[ctx.id]
            self._last_activity = time.monotonic()

    async def _segment(
        self, ctx: _Context, encoder: _Encoder, text: str, flush_id: int | None
    ) -> None:
        if not text:
            return
        started = time.monotonic()
        async for pcm in self._engines.synthesize(text, ctx.voice):
            audio = encoder.write(pcm)
            if audio:
                now = time.monotonic()
                step_ms = (now - started) * 1000
                await self._send(cp.chunk(ctx.id, audio, step_time_ms=step_ms, flush_id=flush_id))
                started = now


def _changed(first: Mapping[str, Any], now: Mapping[str, Any]) -> str | None:
    """The first field name whose value differs between two inputs, or None."""
    for key in sorted(first.keys() | now.keys()):
        if first.get(key) != now.get(key):
            return key
    return None
