"""Cartesia TTS WebSocket client: one warm, persistent socket, one context per announcement.

Protocol facts from docs/protocols.md §6 (messages in :mod:`edgespeak.wire.cartesia`).
Unlike Fish's one-session sockets, contexts multiplex on one socket: each :meth:`stream` opens a
context (a fresh uuid ``context_id``), pushes the text with ``continue: true`` and ends it with
an empty transcript and ``continue: false``; a reader routes the server's frames by
``context_id`` to that stream's queue. Frames of contexts nobody waits for (abandoned,
finished, unknown) are dropped. A stream abandoned before ``done`` sends ``cancel`` for its
context and leaves the socket open for the others.

The socket is opened on entering and kept: after the server closes it with a code worth
reconnecting after (1001, 1005, 1006, 1011, 1012, 1013, 1015, or 1000: the idle close Cartesia
does after 5 minutes) a new one is opened at once, and with jittered capped backoff when
sockets keep dying young. Another close code stops reconnecting in the background; the next
announcement then connects itself. Failed handshakes follow the policy the Fish client shares
(:class:`~edgespeak.providers.connect.Connector`): 401/403 are final and fail every stream at once;
402/429/4xx block streams for a growing backoff while the background task retries; network
errors and 5xx are retried in the background while each stream still tries at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Unpack

import aiohttp

from edgespeak.base.errors import TtsProtocolError, TtsRejected, TtsUnavailable
from edgespeak.providers.connect import ConnectedClient, ConnectionOptions
from edgespeak.providers.session import CLOSED, stream_session
from edgespeak.wire import cartesia as cp

log = logging.getLogger(__name__)

STABLE_S = 5.0  # seconds: a socket closed sooner after opening counts as a failed attempt


class _Context:
    """One announcement's context on the socket ``sock``: its ``inputs`` out, the frames the
    reader routes to it by ``context_id`` in (a :class:`~edgespeak.providers.session.Session`).
    ``ended``: the server ended it (``done`` or ``error``)."""

    def __init__(self, sock: _Socket, context_id: str, inputs: list[str]) -> None:
        self.id = context_id
        self.inbox: asyncio.Queue[object] = asyncio.Queue()  # Response or CLOSED
        self.ended = False
        self._sock, self._inputs = sock, inputs

    async def send(self) -> None:
        for frame in self._inputs:
            await self._sock.ws.send_str(frame)

    def audio(self, message: object) -> bytes | None:
        assert isinstance(message, cp.Response)
        match message.type:
            case "chunk":
                return cp.chunk_audio(message)
            case "done":
                self.ended = True
                return None
            case "error":
                self.ended = True
                detail = cp.error_detail(message.body)
                raise TtsProtocolError(f"provider refused the request: {detail}")
            case _:  # flush_done, timestamps, and whatever newer API versions add
                log.debug("ignoring a %r frame", message.type)
                return b""

    def cut_short(self) -> str:
        return f"connection closed (code {self._sock.close_code}) before 'done'"

    async def end(self) -> None:
        """Drop the context (its late frames are dropped); abandoned, cancel it."""
        del self._sock.contexts[self.id]
        if not self.ended and self._sock.alive:  # abandoned: stop generating it
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                await self._sock.ws.send_str(cp.encode(cp.cancel(self.id)))


class _Socket:
    """One WebSocket and the task that reads it, routing frames to contexts by id."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, on_close: Callable[[_Socket], None]
    ) -> None:
        self.ws = ws
        self.opened_at = asyncio.get_running_loop().time()
        self.contexts: dict[str, _Context] = {}
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._on_close = on_close
        self.reader = asyncio.create_task(self._read())

    @property
    def alive(self) -> bool:
        return not self.ws.closed and not self.closed.is_set()

    def open_context(self, context_id: str, inputs: list[str]) -> _Context:
        """A new context ``context_id`` that will send ``inputs``, routed frames from now on."""
        ctx = _Context(self, context_id, inputs)
        self.contexts[ctx.id] = ctx
        if self.closed.is_set():
            ctx.inbox.put_nowait(CLOSED)
        return ctx

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._route(msg.data)
                else:
                    log.debug("ignoring a frame of type %s", msg.type)
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            for ctx in self.contexts.values():
                ctx.inbox.put_nowait(CLOSED)
            self._on_close(self)

    def _route(self, data: str) -> None:
        try:
            response = cp.decode(data)
        except TtsProtocolError as exc:
            log.warning("ignoring a frame from the provider: %s", exc)
            return
        if response.context_id is None:
            if response.type == "error":  # about no context in particular: everyone's problem
                for ctx in self.contexts.values():
                    ctx.inbox.put_nowait(response)
            else:
                log.debug("ignoring a %r frame without context_id", response.type)
            return
        owner = self.contexts.get(response.context_id)
        if owner is None:
            log.debug("dropping a %r frame of context %s", response.type, response.context_id)
            return
        owner.inbox.put_nowait(response)

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


class CartesiaClient(ConnectedClient):
    """Streams text to ``url`` (``ws[s]://…/tts/websocket``) and yields raw s16le mono PCM at
    ``sample_rate`` Hz back.

    ``version``: the ``Cartesia-Version`` header. ``model``: ``model_id``; ``voice``: the
    default voice id (an announcement's ``reference_id`` overrides it); ``language`` (None:
    left out); ``max_buffer_delay_ms``: sent explicitly, ms. ``options`` (the API key,
    timeouts, backoff bounds): see :class:`~edgespeak.providers.connect.ConnectedClient`. Use
    as ``async with CartesiaClient(...) as client``.
    """

    def __init__(
        self,
        url: str,
        *,
        model: str = cp.DEFAULT_MODEL,
        voice: str | None = None,
        language: str | None = None,
        sample_rate: int = 22050,
        version: str = cp.API_VERSION,
        max_buffer_delay_ms: int = 0,
        **options: Unpack[ConnectionOptions],
    ) -> None:
        super().__init__(url, self._hold, log, **options)
        self._model = model
        self._voice = voice
        self._language = language
        self._sample_rate = sample_rate
        self._version = version
        self._max_buffer_delay_ms = max_buffer_delay_ms
        self._socket: _Socket | None = None
        self._lock = asyncio.Lock()

    @property
    def warm(self) -> bool:
        """True while the socket is open."""
        return self._socket is not None and self._socket.alive

    async def _close_sockets(self) -> None:
        if self._socket is not None:
            await self._socket.close()

    async def _hold(self) -> bool:
        """The background step: have a socket open and wait until it closes.

        True (run again) after a close worth reconnecting after: at once when the socket
        lived :data:`STABLE_S`, else after the backoff of a failure noted with the
        connector. False (logged at ERROR) after another close code. Raises the handshake's
        TtsError (noted by the connector, which tries again or, at a final refusal, stops).
        """
        sock = await self._open_socket()
        loop = asyncio.get_running_loop()
        try:
            young_s = max(0.0, sock.opened_at + STABLE_S - loop.time())
            await asyncio.wait_for(sock.closed.wait(), young_s)
        except TimeoutError:
            self._connector.settled()  # it lived: the next failure is a first one again
            await sock.closed.wait()
        code = sock.close_code
        if code not in cp.RECONNECT_CLOSE_CODES:
            log.error(
                "not reconnecting to the TTS provider in the background: "
                "the provider closed the connection with code %s",
                code,
            )
            return False
        lived = loop.time() - sock.opened_at
        if lived < STABLE_S:
            reason = f"the provider closed the connection (code {code}) after {lived:.1f} s"
            self._connector.failed(TtsUnavailable(reason), reached=True)
            return True
        level = logging.DEBUG if code == 1000 else logging.INFO  # 1000: the idle close
        log.log(level, "the provider closed the connection (code %s) after %.0f s", code, lived)
        return True

    async def _open_socket(self) -> _Socket:
        """The open socket (waiting for a handshake under way), or a new one now. Raises
        the standing refusal or the handshake's TtsError (see
        :class:`~edgespeak.providers.connect.Connector`)."""
        async with self._lock:
            if self._socket is not None and self._socket.alive:
                return self._socket
            self._connector.check()
            headers = {"Cartesia-Version": self._version} | self._auth()
            # The failure count settles once a socket lives STABLE_S (_hold), so sockets
            # that keep dying young back off further each time.
            ws = await self._connector.open(headers, settle=False)
            self._socket = _Socket(ws, self._closed)
            log.debug("provider socket open to %s", self.url)
            return self._socket

    def _closed(self, sock: _Socket) -> None:
        if self._socket is sock:
            self._socket = None
            log.debug("provider socket closed with code %s", sock.close_code)

    def _inputs(self, context_id: str, text: str, voice: str) -> list[str]:
        """The context's two inputs: all of ``text`` (``continue: true``), then its end."""
        return [
            cp.encode(
                cp.generation_request(
                    context_id=context_id,
                    model_id=self._model,
                    voice_id=voice,
                    transcript=transcript,
                    sample_rate=self._sample_rate,
                    continue_=more,
                    language=self._language,
                    max_buffer_delay_ms=self._max_buffer_delay_ms,
                )
            )
            for transcript, more in ((text, True), ("", False))
        ]

    def stream(self, text: str, request: dict[str, Any]) -> AsyncIterator[bytes]:
        """One context: yield bytes of s16le mono PCM at the configured rate as they arrive.

        ``request``: only its ``reference_id`` (the announcement's voice) is used; None
        means the client's ``voice``. Raises TtsUnavailable (unreachable, no first audio in
        time, stalled, closed before ``done``), TtsRejected (a refused handshake, now or
        standing: see :mod:`~edgespeak.providers.connect`; no voice configured), TtsProtocolError
        (an ``error`` frame, with its status and message; bad base64). A socket that closes
        before any audio is retried once on a fresh one. Stopping early sends ``cancel`` for
        the context; the socket stays open. The session loop is
        :func:`~edgespeak.providers.session.stream_session`'s.
        """
        return stream_session(
            functools.partial(self._open_context, text, request.get("reference_id")),
            first_audio_timeout_s=self._first_audio_timeout_s,
            log=log,
        )

    async def _open_context(self, text: str, voice: str | None) -> _Context:
        """A context for ``text`` in ``voice`` (None: the client's) on the open socket."""
        voice = voice or self._voice
        if not voice:
            raise TtsRejected("no Cartesia voice: set [tts] reference_id to a voice id")
        sock = await self._open_socket()
        self.prewarm()  # someone reconnects when this socket closes
        context_id = str(uuid.uuid4())
        return sock.open_context(context_id, self._inputs(context_id, text, voice))
