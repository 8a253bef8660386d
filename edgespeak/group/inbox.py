"""Relay messages received, by group key, until the follower playing them reads them.

The relay of one announcement (docs/protocols.md §16.4) may arrive before this node's
scheduler gets to it (it was playing something else): the messages wait here. A message with
``seq`` 0 opens a new stream for its key (the same phrase announced again without an ``id``
has the same key), so a follower reads the stream that began at or after its plan came.
A stream nobody read is forgotten ``KEEP_S`` seconds after its last message; at most
``MAX_STREAMS`` streams of ``MAX_MESSAGES`` messages are kept (memory on a 512 MB Pi, whatever
is published to the relay topics).
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

from edgespeak.base.errors import TtsUnavailable

KEEP_S = 60.0
MAX_STREAMS = 32  # streams kept at once; the oldest goes first (a flood of keys)
MAX_MESSAGES = 6000  # per stream: 6 minutes of speech, far over the longest announcement
_SEQ = struct.Struct(">I")


class RelayGap(TtsUnavailable):
    """The relay stopped: no message for the allowed gap, or its sender went away.
    ``waited_s``: seconds since the last message (or since reading began)."""

    def __init__(self, why: str, waited_s: float) -> None:
        super().__init__(why)
        self.waited_s = waited_s


@dataclass
class _Stream:
    opened: float  # time.monotonic() seconds at its seq 0
    messages: list[bytes] = field(default_factory=list)
    last: float = 0.0  # time.monotonic() seconds of its newest message


class RelayInbox:
    """The relay streams received, one per key (the newest)."""

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}
        self._changed = asyncio.Event()

    def add(self, key: str, message: bytes, arrived: float) -> None:
        """Keep one relay ``message`` for ``key`` (arrived at ``arrived``, monotonic s). A
        message too short for a header is dropped (the reader's decoder would refuse it)."""
        if len(message) < _SEQ.size:
            return
        self._forget(arrived)
        (seq,) = _SEQ.unpack_from(message)
        stream = self._streams.get(key)
        if seq == 0 or stream is None:
            self._streams.pop(key, None)
            while len(self._streams) >= MAX_STREAMS:
                del self._streams[next(iter(self._streams))]
            stream = self._streams[key] = _Stream(arrived)
        if len(stream.messages) >= MAX_MESSAGES:
            return
        stream.messages.append(message)
        stream.last = arrived
        self.wake()

    def wake(self) -> None:
        """Wake every reader (a message came, or the members changed)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def read(
        self,
        key: str,
        *,
        not_before: float = -math.inf,
        gap_s: float,
        ahead_s: Callable[[], float] = lambda: 0.0,
        gone: Callable[[], str | None],
    ) -> AsyncGenerator[bytes, None]:
        """Yield the messages of ``key``'s stream opened at ``not_before`` (monotonic s) or
        later, in arrival order, until the one flagged END (the caller's decoder tells:
        the caller stops reading then).

        Raises RelayGap when no message came for ``gap_s`` seconds plus ``ahead_s()`` (the
        seconds of audio received and not yet played: a provider pausing between sentences
        while plenty is buffered is no reason to give up), or when ``gone()`` returns a
        reason (checked at every wake-up): the sender went away.
        """
        i = 0
        since = time.monotonic()
        mine: _Stream | None = None  # once found, read on even if a newer one replaces it
        while True:
            if mine is None and (found := self._streams.get(key)) is not None:
                mine = found if found.opened >= not_before else None
            if (stream := mine) is not None:
                while i < len(stream.messages):
                    yield stream.messages[i]
                    i += 1
                since = max(since, stream.last)
            why = gone()
            waited = time.monotonic() - since
            if why is not None:
                raise RelayGap(why, waited)
            allowed = gap_s + max(0.0, ahead_s())
            if waited >= allowed:
                raise RelayGap(f"no relay message for {waited:.2f} s", waited)
            changed = self._changed
            try:
                async with asyncio.timeout(allowed - waited):
                    await changed.wait()
            except TimeoutError:
                pass

    def _forget(self, now: float) -> None:
        old = [k for k, s in self._streams.items() if now - s.last > KEEP_S]
        for key in old:
            del self._streams[key]
