"""The local Fish-live-protocol server (aiohttp), ``GET /v1/tts/live``.

Protocol as in docs/protocols.md §1: per session ``start`` → ``text``* / ``flush``* →
``stop``; the server answers ``audio``* then exactly one ``finish``. Several sessions may follow
one another on one connection unless ``close_after_finish`` is set (the official cloud's
documented behaviour), so clients can be tested against both. Messages are handled in order by
one worker per connection while a reader keeps receiving (pings, close). The ``[server]
test_*`` switches (off by default) refuse handshakes or spoil sessions on purpose, so clients
meet real refusals end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiohttp import WSMsgType, web

from edgespeak.base.errors import EdgespeakError, RequestError
from edgespeak.base.systemd import Notifier, watchdog_loop
from edgespeak.config import ServerConfig
from edgespeak.server.capacity import Capacity
from edgespeak.server.cartesia import CartesiaHandler
from edgespeak.server.engines import LocalEngines
from edgespeak.server.http_tts import add_http_tts
from edgespeak.server.models import add_model_routes, local_voices
from edgespeak.server.output import OutputStream, UnsupportedRequest
from edgespeak.server.refusals import refusal_response
from edgespeak.server.request import parse_request
from edgespeak.sources.espeak import EngineError
from edgespeak.sources.voices import VoiceError
from edgespeak.wire import cartesia as cp
from edgespeak.wire import fish as fp

log = logging.getLogger(__name__)

_END = object()  # reader → worker: the socket closed
CAPACITY = web.AppKey("capacity", Capacity)  # shared by every handler of one server
ENGINES = web.AppKey("engines", LocalEngines)  # the voices every handler speaks with


class _Failed:
    """A session that already got ``finish`` reason ``error``: its remaining messages are
    swallowed up to its ``stop``."""


_FAILED = _Failed()


class SessionError(RequestError):
    """A session must end with ``finish`` reason ``error``, this message and ``extra`` keys."""

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.extra = extra


class _CloseSocket(Exception):
    """Close the WebSocket now, without ``finish`` (test switch ``close_after_audio``)."""


class _Session:
    """One start…stop session's state. ``first_audio_ms``: milliseconds from handling its
    ``start`` to its first ``audio`` sent (the server's own time to first audio; logged at the
    end of the session, read by bench/stream.py), None before."""

    def __init__(self, request: dict[str, Any], engines: LocalEngines) -> None:
        self.started_at = time.monotonic()
        self.first_audio_ms: float | None = None
        try:
            spec = parse_request(request)
        except UnsupportedRequest as exc:
            raise SessionError(str(exc)) from None
        try:  # refused at 'start', before any text is buffered
            self.voice = engines.choose(spec.voice)
        except VoiceError as exc:
            raise SessionError(str(exc)) from None
        except EngineError:
            raise SessionError(
                f"unknown voice {spec.voice!r} (`edgespeak voices list` or GET /model "
                "lists this server's voices)"
            ) from None
        try:
            self.output = OutputStream(
                spec.format,
                spec.sample_rate,
                engines.rate_hz(self.voice),
                spec.opus_bitrate,
                gain_db=spec.volume_db,
            )
        except UnsupportedRequest as exc:
            raise SessionError(str(exc)) from None
        self.speed = spec.speed
        self.buffer = ""
        self.chars = 0
        self.sent_audio = False

    def note_audio(self) -> None:
        """Note that an ``audio`` event went out (the first one sets ``first_audio_ms``)."""
        self.sent_audio = True
        if self.first_audio_ms is None:
            self.first_audio_ms = (time.monotonic() - self.started_at) * 1000


class LiveHandler:
    """Serves ``/v1/tts/live`` with the server's voices; ``config`` gives token, limits,
    lifetime; ``capacity`` counts connections and sessions (shared with the server's other
    handlers)."""

    def __init__(self, config: ServerConfig, engines: LocalEngines, capacity: Capacity) -> None:
        self._config = config
        self._engines = engines
        self._capacity = capacity

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Upgrade to a WebSocket (401 without the right bearer token, 429 when
        ``max_connections`` are open) and serve sessions."""
        if (refused := refusal_response(self._config, request)) is not None:
            return refused
        with self._capacity.connection():
            log.debug("handshake for model %r", request.headers.get("model"))
            return await self._serve(request)

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
                before, event = session, None
                try:
                    msg = fp.decode(item)
                    event = msg.event
                    session = await self._step(ws, session, msg)
                    finished = isinstance(before, _Session) and session is None
                except _CloseSocket:
                    log.warning("closing the socket mid-session (test switch)")
                    await ws.close()
                    return
                except EdgespeakError as exc:  # SessionError, or one from the engine
                    log.warning("session failed: %s", exc)
                    extra = exc.extra if isinstance(exc, SessionError) else {}
                    await ws.send_bytes(fp.finish("error", message=str(exc), **extra))
                    # The client may still send the rest of this session (also when its
                    # 'start' was refused); swallow it up to 'stop'.
                    opened = before is not None or event == "start"
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
                    return _Session(request, self._engines)
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
                    session.note_audio()
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
        fault = self._config.test_session_fault
        if fault == "error_before_audio" and not session.sent_audio:
            raise SessionError(f"test switch: {fault}", test_session_fault=fault, status=500)
        speech = self._engines.synthesize(text, session.voice, speed=session.speed)
        async with contextlib.aclosing(speech):
            async for pcm in speech:
                encoded = session.output.write(pcm)
                if encoded:
                    await ws.send_bytes(fp.audio(encoded))
                    session.note_audio()
                    if fault == "error_after_audio":
                        raise SessionError(
                            f"test switch: {fault}", test_session_fault=fault, status=500
                        )
                    if fault == "close_after_audio":
                        raise _CloseSocket


def build_app(config: ServerConfig, engines: LocalEngines | None = None) -> web.Application:
    """The aiohttp application serving ``/v1/tts/live``, Cartesia's ``/tts/websocket``,
    ``POST /v1/tts`` and the voice list ``/model``. ``engines``: the voices (default: found
    and loaded now, see :meth:`LocalEngines.start`, which raises EngineError when the default
    voice cannot speak)."""
    engines = engines or LocalEngines.start(config.voice, config.piper_voices_dir)
    capacity = Capacity(config.max_connections, config.max_sessions)
    app = web.Application()
    app[CAPACITY] = capacity
    app[ENGINES] = engines
    app.router.add_get(fp.LIVE_PATH, LiveHandler(config, engines, capacity).handle)
    add_model_routes(app, config, local_voices(engines))  # GET /model[/{id}]
    add_http_tts(app, config, engines)
    app.router.add_get(cp.WEBSOCKET_PATH, CartesiaHandler(config, engines, capacity).handle)
    app.on_cleanup.append(_close_engines)
    return app


async def _close_engines(app: web.Application) -> None:
    app[ENGINES].close()


async def serve(config: ServerConfig) -> None:
    """Serve until cancelled; prints ``listening on ws://HOST:PORT/v1/tts/live`` once bound
    (``[server] port = 0`` picks a free port, and this line tells which). The default voice
    is loaded first: raises EngineError (VoiceError) when it cannot speak, before binding."""
    engines = await asyncio.to_thread(LocalEngines.start, config.voice, config.piper_voices_dir)
    runner = web.AppRunner(build_app(config, engines), access_log=None)
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
