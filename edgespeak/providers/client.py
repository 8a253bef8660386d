"""What the daemon needs of a TTS provider client, whatever protocol it speaks.

Satisfied by :class:`~edgespeak.providers.fish.FishLiveClient` (docs/protocols.md §1) and
:class:`~edgespeak.providers.cartesia.CartesiaClient` (§6).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, Self

from edgespeak.base.errors import TtsRejected


class TtsClient(Protocol):
    """A warm connection to one provider at :attr:`url`; use as an async context manager
    (entering starts connecting in the background, leaving closes everything)."""

    @property
    def url(self) -> str:
        """The provider's WebSocket URL (part of the phrase cache key)."""
        ...

    @property
    def warm(self) -> bool:
        """True while an open connection waits for the next announcement."""
        ...

    @property
    def reachable(self) -> bool | None:
        """Whether the last connection attempt succeeded; None before the first one."""
        ...

    def on_reachable_change(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (on the event loop) whenever :attr:`reachable` changes."""
        ...

    @property
    def refusal(self) -> TtsRejected | None:
        """The final refusal (401, 403) that stopped every connection attempt, or None."""
        ...

    @property
    def connecting(self) -> bool:
        """True while a background connection attempt, or the backoff before it, is under way."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def prewarm(self) -> None:
        """Open a connection in the background (retrying with backoff) unless one is open."""
        ...

    async def wait_up(self) -> None:
        """Return once a connection attempt has succeeded (at once if the last one did)."""
        ...

    async def wait_back_up(self) -> None:
        """Return once a connection succeeds after one failed (an outage ended)."""
        ...

    def stream(self, text: str, request: dict[str, Any]) -> AsyncIterator[bytes]:
        """Speak ``text``: the audio bytes in the provider's wire format as they arrive.

        ``request``: the provider request built by
        :func:`edgespeak.providers.fish_request.provider_request`
        (a client takes what applies to it). Raises TtsUnavailable, TtsRejected,
        TtsProtocolError. Stopping early abandons the synthesis.
        """
        ...
