"""The local Fish-live-protocol server (aiohttp), ``GET /v1/tts/live``.

Protocol as in shared/protocols.md §1: per session ``start`` → ``text``* / ``flush``* →
``stop``; the server answers ``audio``* then exactly one ``finish``. Several sessions may follow
one another on one connection unless ``close_after_finish`` is set (the official cloud's
documented behaviour), so clients can be tested against both. Messages are handled in order by
one worker per connection while a reader keeps receiving (pings, close).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from typing import Any

from aiohttp import WSMsgType, web

from edgespeak.config import ServerConfig
from edgespeak.engines.espeak import EngineError, EspeakEngine
from edgespeak.errors import EdgespeakError
from edgespeak.notify import Notifier, watchdog_loop
from edgespeak.server.capacity import Capacity
from edgespeak.server.models import add_model_routes, espeak_voices
from edgespeak.server.output import OutputStream, UnsupportedRequest
from edgespeak.tts import fish_protocol as fp

log = logging.getLogger(__name__)

_END = object()  # reader → worker: the socket closed
CAPACITY = web.AppKey("capacity", Capacity)  # shared by every handler of one server


class _Failed:
    """A session that already got ``finish`` reason ``error``: its remaining messages are
    swallowed up to its ``stop``."""


_FAILED = _Failed()


class SessionError(Exception):
    """A session must end with ``finish`` reason ``error`` and this message."""


class _Session:
    """One start…stop session's state. ``first_audio_ms``: milliseconds from handling its
    ``start`` to its first ``audio`` sent (the server's own time to first audio; logged at the
    end of the session, read by bench/stream.py), None before."""

    def __init__(self, request: dict[str, Any], engine: EspeakEngine) -> None:
        self.started_at = time.monotonic()
        self.first_audio_ms: float | None = None
        self.voice = request.get("reference_id") or None
        if self.voice is not None:  # refused at 'start', before any text is buffered
            try:
                engine.check_voice(str(self.voice))
            except EngineError:
                raise SessionError(
                    f"unknown voice {self.voice!r} (`edgespeak voices list` or GET /model "
                    "lists this server's voices)"
                ) from None
        try:
            self.output = OutputStream(
                str(request.get("format", "mp3")),
                request.get("sample_rate"),
                engine.rate_hz,
                request.get("opus_bitrate", -1000),
            )
        except UnsupportedRequest as exc:
            raise SessionError(str(exc)) from None
        self.buffer = ""
        self.chars = 0

    def sent_audio(self) -> None:
        """Note that an ``audio`` event went out (the first one sets ``first_audio_ms``)."""
        if self.first_audio_ms is None:
            self.first_audio_ms = (time.monotonic() - self.started_at) * 1000


class LiveHandler:
    """Serves ``/v1/tts/live`` with one engine; ``config`` gives token, limits, lifetime;
    ``capacity`` counts connections and sessions (shared with the server's other handlers)."""

    def __init__(self, config: ServerConfig, engine: EspeakEngine, capacity: Capacity) -> None:
        self._config = config
        self._engine = engine
        self._capacity = capacity

    def _authorised(self, request: web.Request) -> bool:
        if self._config.token is None:
            return True
        expected = f"Bearer {self._config.token.get_secret_value()}"
        return hmac.compare_digest(request.headers.get("Authorization", ""), expected)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Upgrade to a WebSocket (401 without the right bearer token, 429 when
        ``max_connections`` are open) and serve sessions."""
        if not self._authorised(request):
            raise web.HTTPUnauthorized(text="invalid or missing bearer token")
        if not self._capacity.connect():
            log.warning("refused a connection: %s", self._capacity.connections_full())
            raise web.HTTPTooManyRequests(text=self._capacity.connections_full())
        try:
            return await self._serve(request)
        finally:
            self._capacity.disconnect()

    async def _serve(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None, max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        inbox: asyncio.Queue[object] = asyncio.Queue()
        worker = asyncio.create_task(self._work(ws, inbox))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await inbox.put(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    await inbox.put(msg.data.encode())
        finally:
            await inbox.put(_END)
            if ws.closed:
                worker.cancel()  # the client is gone: stop synthesising (kills espeak-ng)
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await worker  # ConnectionError: the client left while we were sending
        return ws

    async def _work(self, ws: web.WebSocketResponse, inbox: asyncio.Queue[object]) -> None:
        session: _Session | _Failed | None = None
        try:
            while (item := await inbox.get()) is not _END:
                assert isinstance(item, bytes)
                before, msg = session, None
                try:
                    msg = fp.decode(item)
                    session = await self._step(ws, session, msg)
                    finished = isinstance(before, _Session) and session is None
                except (SessionError, EdgespeakError) as exc:
                    log.warning("session failed: %s", exc)
                    await ws.send_bytes(fp.finish("error", message=str(exc)))
                    # The client may still send the rest of this session (a refused 'start'
                    # included): swallow it up to its 'stop', which gets no second finish.
                    opened = before is not None or (msg is not None and msg.event == "start")
                    session, finished = (_FAILED if opened else None), True
                if isinstance(before, _Session) and session is not before:
                    self._capacity.end_session()
                if finished and self._config.close_after_finish:
                    await ws.close()
                    return
        finally:
            if isinstance(session, _Session):  # the connection ended mid-session
                self._capacity.end_session()

    async def _step(
        self, ws: web.WebSocketResponse, session: _Session | _Failed | None, msg: fp.Message
    ) -> _Session | _Failed | None:
        if isinstance(session, _Failed):
            if msg.event == "start":
                session = None
            else:
                return None if msg.event == "stop" else session
        match msg.event:
            case "start":
                if session is not None:
                    raise SessionError("'start' while a session is open")
                request = msg.body.get("request")
                if not isinstance(request, dict):
                    raise SessionError("'start' needs a 'request' map")
                if not self._capacity.begin_session():
                    raise SessionError(self._capacity.sessions_full())
                try:
                    return _Session(request, self._engine)
                except SessionError:
                    self._capacity.end_session()
                    raise
            case "text" | "flush" | "stop" if session is None:
                raise SessionError(f"{msg.event!r} before 'start'")
            case "text":
                chunk = msg.body.get("text")
                if not isinstance(chunk, str):
                    raise SessionError("'text' needs a string 'text'")
                assert session is not None
                session.chars += len(chunk)
                if session.chars > self._config.max_text_chars:
                    raise SessionError(
                        f"session text exceeds {self._config.max_text_chars} characters"
                    )
                session.buffer += chunk
                return session
            case "flush":
                assert session is not None
                await self._speak(ws, session)
                return session
            case "stop":
                assert session is not None
                await self._speak(ws, session)
                tail = session.output.close()
                if tail:
                    await ws.send_bytes(fp.audio(tail))
                    session.sent_audio()
                await ws.send_bytes(fp.finish("stop"))
                first = session.first_audio_ms
                log.info(
                    "session finished: %d characters, first audio after %s ms",
                    session.chars,
                    "-" if first is None else f"{first:.2f}",
                )
                return None
            case _:
                log.debug("ignoring unknown event %r", msg.event)
                return session

    async def _speak(self, ws: web.WebSocketResponse, session: _Session) -> None:
        text, session.buffer = session.buffer.strip(), ""
        if not text:
            return
        async for pcm in self._engine.synthesize(text, session.voice):
            encoded = session.output.write(pcm)
            if encoded:
                await ws.send_bytes(fp.audio(encoded))
                session.sent_audio()


def build_app(config: ServerConfig, engine: EspeakEngine | None = None) -> web.Application:
    """The aiohttp application serving ``/v1/tts/live`` and the voice list ``/model``."""
    engine = engine or EspeakEngine(voice=config.voice)
    capacity = Capacity(config.max_connections, config.max_sessions)
    handler = LiveHandler(config, engine, capacity)
    app = web.Application()
    app[CAPACITY] = capacity
    app.router.add_get(fp.LIVE_PATH, handler.handle)
    add_model_routes(app, config, espeak_voices(engine.voice_list))  # GET /model[/{id}]
    return app


async def serve(config: ServerConfig) -> None:
    """Serve until cancelled; prints ``listening on ws://HOST:PORT/v1/tts/live`` once bound
    (``[server] port = 0`` picks a free port, and this line tells which)."""
    runner = web.AppRunner(build_app(config), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = runner.addresses[0][1]
    print(f"edgespeak serve: listening on ws://{config.host}:{port}{fp.LIVE_PATH}", flush=True)
    notifier = Notifier()  # systemd Type=notify: ready once bound; pings while the loop runs
    notifier.ready(f"listening on {config.host}:{port}")
    try:
        await watchdog_loop(notifier, lambda: True)
        await asyncio.Event().wait()
    finally:
        notifier.stopping()
        notifier.close()
        await runner.cleanup()
