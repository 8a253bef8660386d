"""Opening a provider's WebSocket, shared by the Fish and Cartesia clients.

:func:`open_websocket` maps a refused or failed handshake to the typed errors of
:mod:`edgespeak.errors` (statuses from shared/protocols.md §1 and §2: 401 key, 402 credit,
429 rate or connection limit); :func:`retrying` is the reconnection policy (jittered, capped
exponential backoff through tenacity, retrying only what waiting can fix: unreachable, 5xx,
429); :class:`Reachability` remembers whether the last attempt succeeded, for the node state
and systemd readiness.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_never,
    wait_random_exponential,
)

from edgespeak.errors import TtsRejected, TtsUnavailable

log = logging.getLogger(__name__)

STALL_TIMEOUT_S = 15.0  # seconds without a message once audio flows: the provider hung
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
REFUSALS = {
    401: "the API key was refused (401); fix [tts] api_key",
    402: "the account is out of credit (402)",
    429: "rate or concurrency limit reached (429)",
}


class Reachability:
    """Whether the last connection attempt to ``url`` succeeded (None before the first)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._up = asyncio.Event()  # the last connection attempt succeeded
        self._down = asyncio.Event()  # the last connection attempt failed

    @property
    def reachable(self) -> bool | None:
        """True/False after the last attempt; None before the first one."""
        if self._up.is_set():
            return True
        return False if self._down.is_set() else None

    def mark(self, up: bool) -> None:
        """Record an attempt's outcome; logs when the provider is reachable again."""
        was = self.reachable
        (self._up if up else self._down).set()
        (self._down if up else self._up).clear()
        if was is False and up:
            log.info("TTS provider %s reachable again", self._url)

    async def wait_up(self) -> None:
        """Return once a connection attempt has succeeded (at once if the last one did)."""
        await self._up.wait()

    async def wait_back_up(self) -> None:
        """Return once a connection succeeds after one failed (an outage ended)."""
        await self._down.wait()
        await self._up.wait()


async def open_websocket(
    http: aiohttp.ClientSession,
    url: str,
    *,
    headers: Mapping[str, str],
    timeout_s: float,
    heartbeat_s: float,
    reach: Reachability,
) -> aiohttp.ClientWebSocketResponse:
    """Open ``url`` with ``headers`` within ``timeout_s`` seconds, pinging every ``heartbeat_s``.

    Raises TtsRejected (401, 402, 429 or another 4xx refusal; ``status`` set) or TtsUnavailable
    (refused connection, DNS, timeout, 5xx). Marks ``reach`` up on success and down when the
    provider could not be reached or failed (a 4xx refusal proves it reachable: not marked).
    Header values (the API key) never appear in the errors.
    """
    try:
        async with asyncio.timeout(timeout_s):
            ws = await http.ws_connect(
                url, headers=dict(headers), heartbeat=heartbeat_s, max_msg_size=MAX_MESSAGE_BYTES
            )
    except aiohttp.WSServerHandshakeError as exc:
        if exc.status in REFUSALS:
            raise TtsRejected(REFUSALS[exc.status], exc.status) from None
        reach.mark(up=False)
        if exc.status >= 500:
            raise TtsUnavailable(f"server error {exc.status} on handshake") from None
        raise TtsRejected(f"handshake refused with {exc.status}", exc.status) from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        reach.mark(up=False)
        reason = str(exc) or type(exc).__name__
        raise TtsUnavailable(f"cannot connect to {url}: {reason}") from None
    reach.mark(up=True)
    return ws


def retryable(exc: BaseException) -> bool:
    """Worth retrying after a wait: unreachable/5xx, or a 429 limit."""
    return isinstance(exc, TtsUnavailable) or (isinstance(exc, TtsRejected) and exc.status == 429)


def retrying(reconnect_max_s: float) -> AsyncRetrying:
    """Retry forever what :func:`retryable` accepts, waiting a random 0…min(0.5·2ⁿ,
    ``reconnect_max_s``) seconds before attempt n+1; re-raise anything else. Logs the first
    failure at WARNING and repeats at DEBUG."""
    return AsyncRetrying(
        retry=retry_if_exception(retryable),
        wait=wait_random_exponential(multiplier=0.5, max=reconnect_max_s),
        stop=stop_never,
        reraise=True,
        before_sleep=_log_retry,
    )


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    level = logging.WARNING if state.attempt_number == 1 else logging.DEBUG
    log.log(level, "TTS connection attempt %d failed: %s", state.attempt_number, exc)
