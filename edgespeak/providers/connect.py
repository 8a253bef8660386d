"""Connecting to a TTS provider: one policy for the Fish and Cartesia clients.

:class:`Connector` opens the provider's WebSocket (docs/protocols.md §1 and §6:
401 key, 402 credit, 429 rate or connection limit) and decides what a failure means, so that
nothing hammers the provider:

- 401 and 403 (the key) are final: nothing connects again (a new key means a new
  configuration, i.e. a restart) and :meth:`Connector.check` raises the refusal for every
  stream at once, without a handshake, so the caller falls back immediately.
- 402 (out of credit), 429 (rate or concurrency limit) and other 4xx block streams for a
  jittered, capped, growing backoff (:class:`~edgespeak.base.backoff.Backoff`, the broker
  link's policy too; other 4xx at the cap) while the background task retries;
  :meth:`Connector.check` raises the refusal meanwhile.
- Network errors, timeouts, 408 and 5xx are retried in the background with the same backoff,
  and each stream still tries at once (a server that is back is used immediately).

The first failure in a row is logged at WARNING (ERROR for refusals), repeats at DEBUG, on the
client's logger (so the log names the provider's module). The
connector also remembers whether the last attempt succeeded (:attr:`Connector.reachable`, for
the node state and systemd readiness) and owns the client's HTTP session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Self, TypedDict

import aiohttp
from pydantic import SecretStr

from edgespeak.base.backoff import Backoff
from edgespeak.base.errors import TtsError, TtsRejected, TtsUnavailable

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
REFUSALS = {
    401: "the API key was refused (401); fix [tts] api_key and restart edgespeak",
    402: "the account is out of credit (402)",
    403: "the API key may not use this service (403); fix [tts] api_key and restart edgespeak",
    429: "rate or concurrency limit reached (429)",
}
FINAL = (401, 403)  # retrying cannot help: never connect again
GROWING = (402, 429)  # retry with the growing backoff; other 4xx at its cap


def handshake_error(status: int) -> TtsError:
    """The typed error for an HTTP ``status`` answering the WebSocket upgrade: TtsUnavailable
    for 5xx and 408, TtsRejected (``status`` set) for the rest."""
    if status >= 500 or status == 408:
        return TtsUnavailable(f"server error {status} on handshake")
    return TtsRejected(REFUSALS.get(status, f"handshake refused with {status}"), status)


class Connector:
    """The connection policy of one provider client at ``url``.

    ``attempt``: the client's background step, run by :meth:`start` in a task after the backoff
    of the last failure; it returns True to be run again (at once, or after the backoff of a
    failure it noted), False to stop; a TtsError from it is a failure already noted (by
    :meth:`open` or :meth:`failed`): it runs again after the backoff. The task stops for good
    at a final refusal. ``first_s``/``max_s``: seconds bounding the backoff; ``timeout_s``:
    seconds for a handshake; ``heartbeat_s``: seconds between WebSocket pings; ``log``: the
    client's logger.
    """

    def __init__(
        self,
        url: str,
        attempt: Callable[[], Awaitable[bool]],
        *,
        timeout_s: float,
        heartbeat_s: float,
        first_s: float,
        max_s: float,
        log: logging.Logger,
    ) -> None:
        self.url = url
        self._log = log
        self._attempt = attempt
        self._timeout_s = timeout_s
        self._heartbeat_s = heartbeat_s
        self._backoff = Backoff(first_s=min(first_s, max_s), max_s=max_s)
        self._refusal: TtsRejected | None = None  # final (401, 403): never connect again
        self._blocked: TtsRejected | None = None  # 402, 429, 4xx: no stream until _retry_at
        self._retry_at = 0.0  # time.monotonic() seconds of the next background attempt
        self._failures = 0  # attempts failed in a row
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._up = asyncio.Event()  # the last connection attempt succeeded
        self._down = asyncio.Event()  # the last connection attempt failed
        self.watchers: list[Callable[[], object]] = []  # told when :attr:`reachable` changes

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
    def refusal(self) -> TtsRejected | None:
        """The final refusal (401, 403) that stopped every connection attempt, or None."""
        return self._refusal

    @property
    def running(self) -> bool:
        """True while the background task runs (False after a final refusal)."""
        return self._task is not None and not self._task.done()

    def check(self) -> None:
        """Raise the refusal standing now (TtsRejected): a final one, or a 402/429/4xx within
        its backoff (the message says when the next attempt is)."""
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
            self._log.info("TTS provider %s reachable again", self.url)
        if was is not up:
            for watcher in self.watchers:
                watcher()

    def start(self) -> None:
        """Run the background task unless it runs, the connector is closing or a final
        refusal stands."""
        if not self._closing and self._refusal is None and not self.running:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        """Run ``attempt`` after each backoff until it returns False or a refusal is final.
        Raises only what ``attempt`` raises besides TtsError."""
        while self._refusal is None:
            if (wait := self._retry_at - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            try:
                if not await self._attempt():
                    return
            except TtsError:
                continue  # noted: final, or _retry_at moved on

    async def open(
        self, headers: Mapping[str, str], *, settle: bool = True
    ) -> aiohttp.ClientWebSocketResponse:
        """Open the WebSocket with ``headers`` within the handshake timeout.

        Raises (after noting it with :meth:`failed`) TtsRejected for a refused upgrade
        (``status`` set; see the module docstring) and TtsUnavailable (refused connection,
        DNS, timeout, 408, 5xx). Header values (the API key) never appear in the errors.
        Success marks the provider reachable and lifts a block; with ``settle`` it also
        :meth:`settled` the failure count (without: the caller does once the socket proves
        itself, so sockets dying young keep backing off).
        """
        if self._http is None:
            self._http = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(self._timeout_s):
                ws = await self._http.ws_connect(
                    self.url,
                    headers=dict(headers),
                    heartbeat=self._heartbeat_s,
                    max_msg_size=MAX_MESSAGE_BYTES,
                )
        except aiohttp.WSServerHandshakeError as exc:
            raise self.failed(handshake_error(exc.status)) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise self.failed(TtsUnavailable(f"cannot connect to {self.url}: {reason}")) from None
        self._blocked, self._retry_at = None, 0.0
        if settle:
            self.settled()
        self._mark(up=True)
        return ws

    def settled(self) -> None:
        """A connection has proved itself: the next failure is a first one again."""
        self._failures = 0

    def failed(self, exc: TtsError, *, reached: bool = False) -> TtsError:
        """Note a failed attempt (returns ``exc``): a final refusal stops every attempt;
        anything else schedules the next background one after its :class:`Backoff` (402/429
        growing, other 4xx at the cap), starts the background task, and for refusals blocks
        streams until then. ``reached``: the provider answered (a socket closed too young),
        so it stays marked reachable."""
        if not reached:
            self._mark(up=False)
        status = exc.status if isinstance(exc, TtsRejected) else None
        if status in FINAL:
            assert isinstance(exc, TtsRejected)
            if self._refusal is None:
                self._log.error(
                    "TTS provider refused the connection, not connecting again: %s", exc
                )
            self._refusal = exc
            return exc
        self._failures += 1
        failures = self._failures if status is None or status in GROWING else 64
        delay = self._backoff.after(failures)
        self._retry_at = time.monotonic() + delay
        self._blocked = exc if isinstance(exc, TtsRejected) else None
        level = logging.DEBUG
        if self._failures == 1:
            level = logging.WARNING if status is None or status == 429 else logging.ERROR
        message = "TTS provider: %s (attempt %d; next in %.1f s)"
        self._log.log(level, message, exc, self._failures, delay)
        self.start()
        return exc

    async def stop(self) -> None:
        """Stop the background task for good (the client is closing)."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def close(self) -> None:
        """:meth:`stop`, then close the HTTP session (after the client closed its sockets)."""
        await self.stop()
        if self._http is not None:
            await self._http.close()


class ConnectionOptions(TypedDict, total=False):
    """The keyword options every provider client takes (see :class:`ConnectedClient`)."""

    token: SecretStr | None
    connect_timeout_s: float
    first_audio_timeout_s: float
    heartbeat_s: float
    reconnect_max_s: float
    reconnect_first_s: float


class ConnectedClient:
    """A provider client at ``url`` and what it exposes of its :class:`Connector`, as
    :class:`~edgespeak.providers.client.TtsClient` wants it.

    ``attempt``: the client's background step (see :class:`Connector`); ``log``: its logger.
    ``token``: the API key, sent as ``Authorization: Bearer`` (:meth:`_auth`; never logged).
    Seconds: ``connect_timeout_s`` for a handshake, ``first_audio_timeout_s`` from a request
    to its first audio, ``heartbeat_s`` between WebSocket pings; ``reconnect_first_s`` and
    ``reconnect_max_s`` bound the backoff between failed connection attempts. A subclass
    provides :attr:`warm` and :meth:`_close_sockets`; entering starts connecting in the
    background, leaving stops that and closes the sockets, then the HTTP session.
    """

    def __init__(
        self,
        url: str,
        attempt: Callable[[], Awaitable[bool]],
        log: logging.Logger,
        *,
        token: SecretStr | None = None,
        connect_timeout_s: float = 5.0,
        first_audio_timeout_s: float = 10.0,
        heartbeat_s: float = 20.0,
        reconnect_max_s: float = 30.0,
        reconnect_first_s: float = 0.5,
    ) -> None:
        self.url = url
        self._token = token
        self._first_audio_timeout_s = first_audio_timeout_s
        self._connector = Connector(
            url,
            attempt,
            timeout_s=connect_timeout_s,
            heartbeat_s=heartbeat_s,
            first_s=reconnect_first_s,
            max_s=reconnect_max_s,
            log=log,
        )

    def _auth(self) -> dict[str, str]:
        """The handshake's ``Authorization`` header, if there is a token."""
        if self._token is None:
            return {}
        return {"Authorization": f"Bearer {self._token.get_secret_value()}"}

    @property
    def warm(self) -> bool:
        """True while an open connection waits for the next announcement."""
        raise NotImplementedError

    async def _close_sockets(self) -> None:
        """Close the client's open sockets (the background task has stopped)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self.prewarm()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._connector.stop()
        await self._close_sockets()
        await self._connector.close()

    @property
    def reachable(self) -> bool | None:
        """Whether the last connection attempt succeeded; None before the first one."""
        return self._connector.reachable

    def on_reachable_change(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (on the event loop) whenever :attr:`reachable` changes."""
        self._connector.watchers.append(callback)

    async def wait_up(self) -> None:
        """Return once a connection attempt has succeeded (at once if the last one did)."""
        await self._connector.wait_up()

    async def wait_back_up(self) -> None:
        """Return once a connection succeeds after one failed (an outage ended)."""
        await self._connector.wait_back_up()

    @property
    def connecting(self) -> bool:
        """True while a background connection attempt, or the backoff before it, is under way
        (False while warm, or after a final refusal: nothing will try again)."""
        return self._connector.running and not self.warm

    @property
    def refusal(self) -> TtsRejected | None:
        """The final refusal (401, 403) that stopped every connection attempt, or None."""
        return self._connector.refusal

    def prewarm(self) -> None:
        """Connect in the background (after the backoff of the last failure) unless that is
        under way or a refusal is final."""
        self._connector.start()
