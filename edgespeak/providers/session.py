"""One announcement's exchange with a TTS provider: the loop the Fish and Cartesia clients share.

A client opens a :class:`Session` (Fish: a socket of its own; Cartesia: a context on the
shared socket) and :func:`stream_session` runs it:

- it sends the session's request (:meth:`Session.send`);
- it reads the session's inbox, where the socket's reader puts each message for the session
  and, once the socket is gone, :data:`CLOSED`. The first audio must come within
  ``first_audio_timeout_s``, then something at least every :data:`STALL_TIMEOUT_S` seconds;
- the session turns each message into audio, the end of the session, or a TtsProtocolError
  (:meth:`Session.audio`): only the framing is the protocol's;
- a socket found closed before any audio (a kept-open one the server had closed meanwhile) is
  retried once on a fresh connection, and so is a send that fails before any audio;
- a lost connection becomes TtsUnavailable;
- the session always ends (:meth:`Session.end`): finished, failed, or abandoned by a consumer
  that stopped listening (the client then closes its socket or cancels its context).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import aiohttp

from edgespeak.base.errors import TtsUnavailable

STALL_TIMEOUT_S = 15.0  # seconds without a message once audio flows: the provider hung
CLOSED = object()  # the socket's reader → a session's inbox: the socket is gone


class Session(Protocol):
    """One announcement on one connection, as the protocol frames it."""

    @property
    def inbox(self) -> asyncio.Queue[object]:
        """The session's incoming messages as the socket's reader puts them, then
        :data:`CLOSED` once the socket is gone."""
        ...

    async def send(self) -> None:
        """Send the whole request. Raises aiohttp.ClientError or ConnectionError."""
        ...

    def audio(self, message: object) -> bytes | None:
        """The audio bytes ``message`` carries (``b""``: none, such as a log event), or None
        when it ends the session. Raises TtsProtocolError (the provider ended the session with
        an error; a malformed message)."""
        ...

    def cut_short(self) -> str:
        """Why the session failed when its socket closed after audio had come (the message
        of the TtsUnavailable raised)."""
        ...

    async def end(self) -> None:
        """Release the connection, whether the session finished, failed or was abandoned."""
        ...


async def stream_session(
    open_session: Callable[[], Awaitable[Session]],
    *,
    first_audio_timeout_s: float,
    log: logging.Logger,
) -> AsyncIterator[bytes]:
    """Run the session ``open_session`` opens; yield its audio bytes as they arrive.

    ``first_audio_timeout_s``: seconds from the request to the first audio; ``log``: the
    client's logger. Raises TtsUnavailable (no first audio in time, stalled, the connection
    lost or closed before the session's end), what ``open_session`` raises (the client's
    TtsRejected, TtsUnavailable) and what :meth:`Session.audio` raises (TtsProtocolError).
    """
    for attempt in (1, 2):
        session = await open_session()
        got_audio = False
        try:
            await session.send()
            async for chunk in _receive(session, first_audio_timeout_s):
                got_audio = True
                yield chunk
        except _Stale:
            if attempt == 2:
                raise TtsUnavailable("connection closed before any audio arrived") from None
            log.debug("the connection closed before any audio; retrying on a fresh one")
            continue
        except (aiohttp.ClientError, ConnectionError) as exc:
            if got_audio or attempt == 2:
                raise TtsUnavailable(f"the TTS provider connection was lost: {exc}") from None
            continue
        finally:
            await session.end()
        return


async def _receive(session: Session, first_audio_timeout_s: float) -> AsyncIterator[bytes]:
    got_audio = False
    timeout = first_audio_timeout_s
    while True:
        try:
            message = await asyncio.wait_for(session.inbox.get(), timeout)
        except TimeoutError:
            if got_audio:
                raise TtsUnavailable(
                    f"the stream stalled: nothing for {STALL_TIMEOUT_S:g} s"
                ) from None
            raise TtsUnavailable(
                f"no audio within {first_audio_timeout_s:g} s of the request"
            ) from None
        if message is CLOSED:
            if not got_audio:
                raise _Stale
            raise TtsUnavailable(session.cut_short())
        chunk = session.audio(message)
        if chunk is None:
            return
        if chunk:
            got_audio, timeout = True, STALL_TIMEOUT_S
            yield chunk


class _Stale(Exception):
    """The socket closed before any audio: safe to retry the session on a fresh connection."""
