"""How much the local server takes on at once: WebSocket connections and sessions.

A Pi or a small home server runs one espeak-ng process per session, or Piper's syntheses in
turn; past a few at once every session slows down together. So the server refuses the
connection past ``[server] max_connections`` (HTTP 429, as Fish's cloud does at its
concurrency limit, docs/protocols.md §1) and ends a session past ``max_sessions`` at once
with an error the client can act on (fall back), instead of letting everyone's time to first
audio grow.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import web

log = logging.getLogger(__name__)


@dataclass
class Capacity:
    """Counts of connections and sessions open now, against their limits."""

    max_connections: int
    max_sessions: int
    connections: int = 0
    sessions: int = 0

    def connect(self) -> bool:
        """Count a new connection; False (not counted) when ``max_connections`` are open."""
        if self.connections >= self.max_connections:
            return False
        self.connections += 1
        return True

    def disconnect(self) -> None:
        """A counted connection closed."""
        self.connections -= 1

    @contextlib.contextmanager
    def connection(self) -> Iterator[None]:
        """Count a connection for the ``with`` block. Raises web.HTTPTooManyRequests (429,
        :meth:`connections_full` as its text; logged at WARNING) when ``max_connections`` are
        open, before the block runs."""
        if not self.connect():
            log.warning("refused a connection: %s", self.connections_full())
            raise web.HTTPTooManyRequests(text=self.connections_full())
        try:
            yield
        finally:
            self.disconnect()

    def begin_session(self) -> bool:
        """Count a new session; False (not counted) when ``max_sessions`` are running."""
        if self.sessions >= self.max_sessions:
            return False
        self.sessions += 1
        return True

    def end_session(self) -> None:
        """A counted session ended (finished, failed, or its connection closed)."""
        self.sessions -= 1

    def connections_full(self) -> str:
        """The 429 body."""
        return f"server busy: {self.connections} connections open ([server] max_connections)"

    def sessions_full(self) -> str:
        """The ``finish`` error of a session refused."""
        return f"server busy: {self.sessions} sessions running ([server] max_sessions)"
