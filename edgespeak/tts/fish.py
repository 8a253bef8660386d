"""Fish Audio live protocol client with a warm, persistent WebSocket (aiohttp).

Protocol facts from shared/protocols.md §1. The connection is opened at :meth:`start` and kept
alive with WebSocket pings. After a session's ``finish`` the socket is reused if the server kept
it open; if the server closed it (the documented cloud behaviour) a new one is opened at once,
so the next announcement does not wait for a handshake. There is no cancel event: abandoning a
stream closes its socket, and a fresh one is pre-warmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from pydantic import SecretStr

from edgespeak.errors import TtsError, TtsProtocolError, TtsUnavailable
from edgespeak.tts import fish_protocol as fp
from edgespeak.tts.connect import STALL_TIMEOUT_S, Reachability, open_websocket, retrying

log = logging.getLogger(__name__)

_CLOSED = object()  # reader → session: the socket is gone


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


class FishLiveClient:
    """Streams text to ``url`` (``ws[s]://…/v1/tts/live``) and yields the audio bytes back.

    ``token``: bearer API key (never logged). ``model``: the ``model`` handshake header.
    Timeouts are in seconds. Use as ``async with FishLiveClient(...) as client``.
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
    ) -> None:
        self.url = url
        self._token = token
        self._model = model
        self._connect_timeout_s = connect_timeout_s
        self._first_audio_timeout_s = first_audio_timeout_s
        self._heartbeat_s = heartbeat_s
        self._reconnect_max_s = reconnect_max_s
        self._http: aiohttp.ClientSession | None = None
        self._conn: _Connection | None = None
        self._warming: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closing = False
        self._sessions = 0  # sessions running now
        self._reach = Reachability(url)

    async def __aenter__(self) -> FishLiveClient:
        self._http = aiohttp.ClientSession()
        self.prewarm()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        if self._warming is not None:
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warming  # _keep_warm never raises anything else
        if self._conn is not None:
            await self._conn.close()
        if self._http is not None:
            await self._http.close()

    @property
    def warm(self) -> bool:
        """True while an open connection is waiting for the next session."""
        return self._conn is not None and self._conn.alive

    @property
    def reachable(self) -> bool | None:
        """Whether the last connection attempt succeeded; None before the first one."""
        return self._reach.reachable

    async def wait_up(self) -> None:
        """Return once a connection attempt has succeeded (at once if the last one did)."""
        await self._reach.wait_up()

    async def wait_back_up(self) -> None:
        """Return once a connection succeeds after one failed (an outage ended)."""
        await self._reach.wait_back_up()

    def prewarm(self) -> None:
        """Open a connection in the background (retrying with jittered capped backoff)."""
        if not self._closing and (self._warming is None or self._warming.done()):
            self._warming = asyncio.create_task(self._keep_warm())

    async def _keep_warm(self) -> None:
        """Connect unless warm or a session is running; retry unreachable/429 with backoff.

        Logs the first failure at WARNING and repeats at DEBUG; gives up (logged at ERROR) on
        a refusal that retrying cannot fix (401, 402, other 4xx). Never raises.
        """
        attempt = 0
        try:
            async for retry in retrying(self._reconnect_max_s):
                with retry:
                    attempt += 1
                    async with self._lock:
                        # A running session has its own connection; parking a second one
                        # now could leak it. The session pre-warms again when it ends.
                        if not self.warm and self._sessions == 0:
                            self._conn = await self._connect()
        except TtsError as exc:
            log.error("not retrying the TTS connection: %s", exc)
            return
        if attempt > 1:
            log.info("TTS provider connection warm again after %d attempts", attempt)

    async def _connect(self) -> _Connection:
        assert self._http is not None, "use FishLiveClient as an async context manager"
        headers = {"model": self._model}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        ws = await open_websocket(
            self._http,
            self.url,
            headers=headers,
            timeout_s=self._connect_timeout_s,
            heartbeat_s=self._heartbeat_s,
            reach=self._reach,
        )
        return _Connection(ws, self._closed_while_idle)

    def _closed_while_idle(self, conn: _Connection) -> None:
        if self._conn is conn:  # the parked connection died: have the next one ready
            self._conn = None
            self.prewarm()

    async def _take(self) -> _Connection:
        """The warm connection (waiting for a handshake under way), or a fresh one now."""
        async with self._lock:
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
        TtsRejected (401/402/429 handshake), TtsProtocolError (``finish`` with ``error``,
        undecodable frames). If the consumer stops early the socket is closed (no cancel event
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
                    raise TtsUnavailable(f"connection lost: {exc}") from None
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
                raise TtsUnavailable("connection closed before 'finish'")
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
                extra = {k: v for k, v in msg.body.items() if k not in ("event", "reason")}
                detail = extra.pop("message", None) or extra or "no detail given"
                raise TtsProtocolError(f"provider ended the session with an error: {detail}")
            elif msg.event == "log":
                log.debug("provider log: %s", msg.body.get("message"))
            else:
                log.debug("ignoring unknown event %r", msg.event)


class _StaleConnection(Exception):
    """The socket closed before any audio: safe to retry the session on a fresh connection."""
