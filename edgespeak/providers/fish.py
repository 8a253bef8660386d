"""Fish Audio live protocol client with a warm, persistent WebSocket (aiohttp).

Protocol facts from docs/protocols.md §1. The connection is opened at :meth:`start` and kept
alive with WebSocket pings. After a session's ``finish`` the socket is reused if the server kept
it open; if the server closed it (the documented cloud behaviour) a new one is opened at once,
so the next announcement does not wait for a handshake. There is no cancel event: abandoning a
stream closes its socket, and a fresh one is pre-warmed.

Failed handshakes are handled by :class:`~edgespeak.providers.connect.Connector` (the policy both
provider clients share, see there): 401/403 are final and fail every stream at once;
402/429/4xx block streams for a growing backoff while a background task retries; network
errors and 5xx are retried in the background while each stream still tries at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Unpack

import aiohttp

from edgespeak.base.errors import TtsProtocolError
from edgespeak.providers.connect import ConnectedClient, ConnectionOptions
from edgespeak.providers.session import CLOSED, stream_session
from edgespeak.wire import fish as fp

log = logging.getLogger(__name__)

MAX_DETAIL_CHARS = 300  # of a finish error's extra keys, in the exception message


class _Connection:
    """One WebSocket and the task that reads it into ``inbox`` (pongs need a running reader)."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, on_close: Callable[[_Connection], None]
    ) -> None:
        self.ws = ws
        self.inbox: asyncio.Queue[object] = asyncio.Queue()
        self._on_close = on_close
        self.reader = asyncio.create_task(self._read())

    @property
    def alive(self) -> bool:
        return not self.ws.closed and not self.reader.done()

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    await self.inbox.put(msg.data)
                else:
                    log.debug("ignoring non-binary frame of type %s", msg.type)
        finally:
            await self.inbox.put(CLOSED)
            self._on_close(self)

    async def close(self) -> None:
        self.reader.cancel()
        await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


class FishLiveClient(ConnectedClient):
    """Streams text to ``url`` (``ws[s]://…/v1/tts/live``) and yields the audio bytes back.

    ``model``: the ``model`` handshake header; ``options`` (the API key, timeouts, backoff
    bounds): see :class:`~edgespeak.providers.connect.ConnectedClient`. Use as
    ``async with FishLiveClient(...) as client``.
    """

    def __init__(
        self, url: str, *, model: str = "s1", **options: Unpack[ConnectionOptions]
    ) -> None:
        super().__init__(url, self._warm_once, log, **options)
        self._model = model
        self._conn: _Connection | None = None
        self._lock = asyncio.Lock()
        self._sessions = 0  # sessions running now

    @property
    def warm(self) -> bool:
        """True while an open connection is waiting for the next session."""
        return self._conn is not None and self._conn.alive

    async def _close_sockets(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def _warm_once(self) -> bool:
        """The background step: connect unless warm, finally refused, or a session is running
        (False: done; TtsError: failed, noted by the connector, which tries again)."""
        async with self._lock:
            # A running session has its own connection; parking a second one
            # now could leak it. The session pre-warms again when it ends.
            if self._connector.refusal is None and not self.warm and self._sessions == 0:
                self._conn = await self._connect()
        return False

    async def _connect(self) -> _Connection:
        ws = await self._connector.open({"model": self._model} | self._auth())
        return _Connection(ws, self._closed_while_idle)

    def _closed_while_idle(self, conn: _Connection) -> None:
        if self._conn is conn:  # the parked connection died: have the next one ready
            self._conn = None
            self.prewarm()

    async def _take(self) -> _Connection:
        """The warm connection (waiting for a handshake under way), or a fresh one now."""
        async with self._lock:
            self._connector.check()
            conn, self._conn = self._conn, None
            if conn is not None and conn.alive:
                return conn
            if conn is not None:
                await conn.close()
            return await self._connect()

    def stream(self, text: str, request: dict[str, Any]) -> AsyncIterator[bytes]:
        """One session: yield the audio bytes (wire format of ``request["format"]``).

        Sends ``start``, the first sentence, ``flush``, the rest, ``stop``; ends at ``finish``.
        Raises TtsUnavailable (unreachable, no first audio in time, dropped mid-stream),
        TtsRejected (a refused handshake, now or standing: see :mod:`~edgespeak.providers.connect`),
        TtsProtocolError (``finish`` with ``error``, its detail in the message; undecodable
        frames). If the consumer stops early the socket is closed (no cancel event
        exists) and a new one is pre-warmed. The session loop is
        :func:`~edgespeak.providers.session.stream_session`'s.
        """
        first, rest = fp.split_first_sentence(text)
        frames = [fp.start(request), fp.text(first), fp.flush()]
        frames += [fp.text(rest)] if rest else []
        frames.append(fp.stop())
        return stream_session(
            functools.partial(self._open_session, frames),
            first_audio_timeout_s=self._first_audio_timeout_s,
            log=log,
        )

    async def _open_session(self, frames: list[bytes]) -> _Session:
        self._sessions += 1
        try:
            conn = await self._take()
        except BaseException:
            self._sessions -= 1
            raise
        return _Session(conn, frames, self._release)

    async def _release(self, conn: _Connection, finished: bool) -> None:
        """A session on ``conn`` ended (``finished``: with reason ``stop``)."""
        self._sessions -= 1
        if finished and conn.alive and not self.warm:
            self._conn = conn  # the server kept it open: reuse it next time
        else:
            await conn.close()
            self.prewarm()


class _Session:
    """One session on a connection of its own: ``frames`` out; ``audio``, ``log`` and
    ``finish`` events in (a :class:`~edgespeak.providers.session.Session`). Its end hands the
    connection to ``release`` with whether the session finished."""

    def __init__(
        self,
        conn: _Connection,
        frames: list[bytes],
        release: Callable[[_Connection, bool], Awaitable[None]],
    ) -> None:
        self._conn, self._frames, self._release = conn, frames, release
        self.finished = False  # the server ended it with reason "stop"

    @property
    def inbox(self) -> asyncio.Queue[object]:
        return self._conn.inbox

    async def send(self) -> None:
        for frame in self._frames:
            await self._conn.ws.send_bytes(frame)

    def audio(self, message: object) -> bytes | None:
        assert isinstance(message, bytes)
        msg = fp.decode(message)
        if msg.event == "audio":
            chunk = msg.body.get("audio")
            if not isinstance(chunk, bytes):
                raise TtsProtocolError("'audio' event without binary 'audio'")
            return chunk
        if msg.event == "finish":
            if msg.body.get("reason") == "stop":
                self.finished = True
                return None
            detail = _error_detail(msg.body)
            log.warning("provider ended the session with an error: %s", detail)
            raise TtsProtocolError(f"provider ended the session with an error: {detail}")
        if msg.event == "log":
            log.debug("provider log: %s", msg.body.get("message"))
        else:
            log.debug("ignoring unknown event %r", msg.event)
        return b""

    def cut_short(self) -> str:
        return "the TTS provider's connection closed before 'finish': speech cut short"

    async def end(self) -> None:
        await self._release(self._conn, self.finished)


def _error_detail(body: dict[str, Any]) -> str:
    """Whatever a ``finish`` with reason ``error`` carried besides ``event`` and ``reason``
    (Fish documents none): its ``message`` first, then the other keys, shortened."""
    extra = {k: v for k, v in body.items() if k not in ("event", "reason")}
    message = extra.pop("message", None)
    parts = [str(message)] if message not in (None, "") else []
    parts += [f"{k}={v!r}" for k, v in sorted(extra.items(), key=lambda kv: str(kv[0]))]
    detail = "; ".join(parts) or "no detail given"
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[: MAX_DETAIL_CHARS - 1] + "…"
    return detail
