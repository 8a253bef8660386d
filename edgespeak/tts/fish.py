"""Fish Audio live protocol client with a warm, persistent WebSocket (aiohttp).

Protocol facts from shared/protocols.md §1. The connection is opened at :meth:`start` and kept
alive with WebSocket pings. After a session's ``finish`` the socket is reused if the server kept
it open; if the server closed it (the documented cloud behaviour) a new one is opened at once,
so the next announcement does not wait for a handshake. There is no cancel event: abandoning a
stream closes its socket, and a fresh one is pre-warmed.

Failed handshakes (shared/protocols.md §1 "Handshake"), so that nothing hammers the provider:
- 401 and 403 (the key) are final: the client never connects again (a new key means a new
  configuration, i.e. a restart) and every stream raises the refusal at once, without a
  handshake, so the caller falls back immediately.
- 402 (out of credit), 429 (rate or concurrency limit) and other 4xx block streams for a
  jittered, capped, growing backoff (:func:`~edgespeak.tts.backoff.backoff_s`; other 4xx at the
  cap) while a background task retries; streams during the block raise the refusal at once.
- Network errors, timeouts, 408 and 5xx are retried in the background with the same backoff,
  and each stream still tries at once (a server that is back is used immediately).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from pydantic import SecretStr

from edgespeak.errors import TtsError, TtsProtocolError, TtsRejected, TtsUnavailable
from edgespeak.tts import fish_protocol as fp
from edgespeak.tts.backoff import backoff_s

log = logging.getLogger(__name__)

_CLOSED = object()  # reader → session: the socket is gone
STALL_TIMEOUT_S = 15.0  # seconds without a message once audio flows: the provider hung
MAX_DETAIL_CHARS = 300  # of a finish error's extra keys, in the exception message
_REFUSALS = {
    401: "the API key was refused (401); fix [tts] api_key and restart edgespeak",
    402: "the account is out of credit (402)",
    403: "the API key may not use this service (403); fix [tts] api_key and restart edgespeak",
    429: "rate or concurrency limit reached (429)",
}
_FINAL = (401, 403)  # retrying cannot help: never connect again
_GROWING = (402, 429)  # retry with the growing backoff; other 4xx at its cap


def _handshake_error(status: int) -> TtsError:
    """The typed error for an HTTP ``status`` answering the WebSocket upgrade."""
    if status >= 500 or status == 408:
        return TtsUnavailable(f"server error {status} on handshake")
    return TtsRejected(_REFUSALS.get(status, f"handshake refused with {status}"), status)


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
        self._connect_timeout_s = connect_timeout_s
        self._first_audio_timeout_s = first_audio_timeout_s
        self._heartbeat_s = heartbeat_s
        self._reconnect_max_s = reconnect_max_s
        self._reconnect_first_s = min(reconnect_first_s, reconnect_max_s)
        self._refusal: TtsRejected | None = None  # final (401, 403): never connect again
        self._blocked: TtsRejected | None = None  # 402, 429, 4xx: no stream until _retry_at
        self._retry_at = 0.0  # time.monotonic() seconds of the next background attempt
        self._failures = 0  # connection attempts failed in a row
        self._http: aiohttp.ClientSession | None = None
        self._conn: _Connection | None = None
        self._warming: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closing = False
        self._sessions = 0  # sessions running now
        self._up = asyncio.Event()  # the last connection attempt succeeded
        self._down = asyncio.Event()  # the last connection attempt failed

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
        if self._up.is_set():
            return True
        return False if self._down.is_set() else None

    async def wait_up(self) -> None:
        """Return once a connection attempt has succeeded (at once if the last one did)."""
        await self._up.wait()

    async def wait_back_up(self) -> None:
        """Return once a connection succeeds after one failed (an outage ended)."""
        await self._down.wait()
        await self._up.wait()

    @property
    def connecting(self) -> bool:
        """True while a background connection attempt, or the backoff before it, is under way
        (False once warm, or after a final refusal: nothing will try again)."""
        return self._warming is not None and not self._warming.done()

    @property
    def refusal(self) -> TtsRejected | None:
        """The final refusal (401, 403) that stopped every connection attempt, or None."""
        return self._refusal

    def _check_refused(self) -> None:
        """Raise the refusal standing now: a final one, or a 402/429/4xx within its backoff."""
        if self._refusal is not None:
            raise TtsRejected(str(self._refusal), self._refusal.status)
        if self._blocked is not None and (left := self._retry_at - time.monotonic()) > 0:
            raise TtsRejected(
                f"{self._blocked}; next attempt in {left:.1f} s", self._blocked.status
            )

    def _mark(self, up: bool) -> None:
        was = self.reachable
        (self._up if up else self._down).set()
        (self._down if up else self._up).clear()
        if was is False and up:
            log.info("TTS provider %s reachable again", self.url)

    def prewarm(self) -> None:
        """Open a connection in the background (after the backoff of the last failure)."""
        if (
            not self._closing
            and self._refusal is None
            and (self._warming is None or self._warming.done())
        ):
            self._warming = asyncio.create_task(self._keep_warm())

    async def _keep_warm(self) -> None:
        """Connect unless warm, finally refused, or a session is running; after each failure
        wait for the backoff :meth:`_failed` set, then try again. Never raises."""
        while self._refusal is None:
            if (wait := self._retry_at - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            try:
                async with self._lock:
                    # A running session has its own connection; parking a second one
                    # now could leak it. The session pre-warms again when it ends.
                    if self._refusal is None and not self.warm and self._sessions == 0:
                        self._conn = await self._connect()
            except TtsError:
                continue  # noted by _failed: final, or _retry_at moved on
            return

    def _failed(self, exc: TtsError) -> TtsError:
        """Note a failed connection attempt (returns ``exc``): a final refusal stops every
        attempt; anything else schedules the next background one after :func:`backoff_s`
        (402/429 growing, other 4xx at the cap) and, for refusals, blocks streams until then.
        Logs the first failure in a row at WARNING (ERROR for refusals), repeats at DEBUG."""
        self._mark(up=False)
        status = exc.status if isinstance(exc, TtsRejected) else None
        if status in _FINAL:
            assert isinstance(exc, TtsRejected)
            if self._refusal is None:
                log.error("TTS provider refused the connection, not connecting again: %s", exc)
            self._refusal = exc
            return exc
        self._failures += 1
        cap = self._reconnect_max_s
        failures = self._failures if status is None or status in _GROWING else 64
        delay = backoff_s(failures, first_s=self._reconnect_first_s, max_s=cap)
        self._retry_at = time.monotonic() + delay
        self._blocked = exc if isinstance(exc, TtsRejected) else None
        level = logging.DEBUG
        if self._failures == 1:
            level = logging.WARNING if status is None or status == 429 else logging.ERROR
        log.log(level, "TTS provider: %s (attempt %d; next in %.1f s)", exc, self._failures, delay)
        self.prewarm()
        return exc

    async def _connect(self) -> _Connection:
        assert self._http is not None, "use FishLiveClient as an async context manager"
        headers = {"model": self._model}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                ws = await self._http.ws_connect(
                    self.url,
                    headers=headers,
                    heartbeat=self._heartbeat_s,
                    max_msg_size=16 * 1024 * 1024,
                )
        except aiohttp.WSServerHandshakeError as exc:
            raise self._failed(_handshake_error(exc.status)) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise self._failed(TtsUnavailable(f"cannot connect to {self.url}: {reason}")) from None
        self._failures, self._blocked, self._retry_at = 0, None, 0.0
        self._mark(up=True)
        return _Connection(ws, self._closed_while_idle)

    def _closed_while_idle(self, conn: _Connection) -> None:
        if self._conn is conn:  # the parked connection died: have the next one ready
            self._conn = None
            self.prewarm()

    async def _take(self) -> _Connection:
        """The warm connection (waiting for a handshake under way), or a fresh one now."""
        async with self._lock:
            self._check_refused()
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
        TtsRejected (a refused handshake, now or standing: see the module docstring),
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
