"""Fish Audio live protocol client with a warm, persistent WebSocket (aiohttp).

Protocol facts from shared/protocols.md §1. The connection is opened at :meth:`start` and kept
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
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from pydantic import SecretStr

from edgespeak.base.errors import TtsProtocolError, TtsUnavailable
from edgespeak.providers.connect import STALL_TIMEOUT_S, ConnectedClient, Connector
from edgespeak.wire import fish as fp

log = logging.getLogger(__name__)

_CLOSED = object()  # reader → session: the socket is gone
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
            await self.inbox.put(_CLOSED)
            self._on_close(self)

    async def close(self) -> None:
        self.reader.cancel()
        await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


class FishLiveClient(ConnectedClient):
    """Streams text to ``url`` (``ws[s]://…/v1/tts/live``) and yields the audio bytes back.

    ``token``: bearer API key (never logged). ``model``: the ``model`` handshake header.
    Timeouts are in seconds; ``reconnect_first_s``/``reconnect_max_s`` bound the backoff
    between failed connection attempts. Use as ``async with FishLiveClient(...) as client``.
    """

    def __init__(
        self,
        url: str,
        *,
        token: SecretStr | None = None,
        model: str = "s1",
        connect_timeout_s: float = 5.0,
        first_audio_timeout_s: float = 10.0,
        heartbeat_s: float = 20.0,
        reconnect_max_s: float = 30.0,
        reconnect_first_s: float = 0.5,
    ) -> None:
        self.url = url
        self._token = token
        self._model = model
        self._first_audio_timeout_s = first_audio_timeout_s
        self._connector = Connector(
            url,
            self._warm_once,
            timeout_s=connect_timeout_s,
            heartbeat_s=heartbeat_s,
            first_s=reconnect_first_s,
            max_s=reconnect_max_s,
            log=log,
        )
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
        headers = {"model": self._model}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        ws = await self._connector.open(headers)
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

    async def stream(self, text: str, request: dict[str, Any]) -> AsyncIterator[bytes]:
        """One session: yield the audio bytes (wire format of ``request["format"]``).

        Sends ``start``, the first sentence, ``flush``, the rest, ``stop``; ends at ``finish``.
        Raises TtsUnavailable (unreachable, no first audio in time, dropped mid-stream),
        TtsRejected (a refused handshake, now or standing: see :mod:`~edgespeak.providers.connect`),
        TtsProtocolError (``finish`` with ``error``, its detail in the message; undecodable
        frames). If the consumer stops early the socket is closed (no cancel event
        exists) and a new one is pre-warmed.
        """
        first, rest = fp.split_first_sentence(text)
        frames = [fp.start(request), fp.text(first), fp.flush()]
        frames += [fp.text(rest)] if rest else []
        frames.append(fp.stop())
        for attempt in (1, 2):
            self._sessions += 1
            try:
                conn = await self._take()
            except BaseException:
                self._sessions -= 1
                raise
            got_audio = False
            finished = False
            try:
                for frame in frames:
                    await conn.ws.send_bytes(frame)
                async for chunk in self._receive(conn):
                    got_audio = True
                    yield chunk
                finished = True
            except _StaleConnection:
                if attempt == 2:
                    raise TtsUnavailable("connection closed before any audio arrived") from None
                log.debug("warm connection was closed by the server; retrying on a fresh one")
                continue
            except (aiohttp.ClientError, ConnectionError) as exc:
                if got_audio or attempt == 2:
                    raise TtsUnavailable(f"the TTS provider connection was lost: {exc}") from None
                continue
            finally:
                self._sessions -= 1
                if finished and conn.alive and not self.warm:
                    self._conn = conn  # the server kept it open: reuse it next time
                else:
                    await conn.close()
                    self.prewarm()
            return

    async def _receive(self, conn: _Connection) -> AsyncIterator[bytes]:
        got_audio = False
        timeout: float | None = self._first_audio_timeout_s
        while True:
            try:
                item = await asyncio.wait_for(conn.inbox.get(), timeout)
            except TimeoutError:
                if got_audio:
                    raise TtsUnavailable(
                        f"the stream stalled: nothing for {STALL_TIMEOUT_S:g} s"
                    ) from None
                raise TtsUnavailable(
                    f"no audio within {self._first_audio_timeout_s:g} s of the request"
                ) from None
            if item is _CLOSED:
                if not got_audio:
                    raise _StaleConnection
                raise TtsUnavailable(
                    "the TTS provider's connection closed before 'finish': speech cut short"
                )
            assert isinstance(item, bytes)
            msg = fp.decode(item)
            if msg.event == "audio":
                chunk = msg.body.get("audio")
                if not isinstance(chunk, bytes):
                    raise TtsProtocolError("'audio' event without binary 'audio'")
                if chunk:
                    got_audio, timeout = True, STALL_TIMEOUT_S
                    yield chunk
            elif msg.event == "finish":
                if msg.body.get("reason") == "stop":
                    return
                detail = _error_detail(msg.body)
                log.warning("provider ended the session with an error: %s", detail)
                raise TtsProtocolError(f"provider ended the session with an error: {detail}")
            elif msg.event == "log":
                log.debug("provider log: %s", msg.body.get("message"))
            else:
                log.debug("ignoring unknown event %r", msg.event)


class _StaleConnection(Exception):
    """The socket closed before any audio: safe to retry the session on a fresh connection."""


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
