"""Pre-warmed phrases: ``[cache] phrases`` synthesised ahead of time and pinned in the cache.

At daemon startup every configured phrase is checked (verified, not just looked up) and the
missing or damaged ones are synthesised through the provider in the background, retried with
jittered capped backoff while the provider is unreachable. Whenever the provider comes back
after an outage, the pass runs again, so entries dropped meanwhile are filled as soon as
possible. The same pass backs ``edgespeak cache warm``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from edgespeak.base.backoff import Backoff
from edgespeak.base.errors import CacheError, EdgespeakError, TtsUnavailable
from edgespeak.config import Phrase, Settings
from edgespeak.providers.client import TtsClient
from edgespeak.providers.fish_request import provider_request
from edgespeak.sources.cache import PhraseCache, phrase_key
from edgespeak.sources.synthesis import Synthesizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmResult:
    """One phrase's outcome: ``stored`` (synthesised now), ``cached`` (was good) or ``failed``."""

    phrase: Phrase
    outcome: str
    error: EdgespeakError | None = None


class PhraseWarmer:
    """Keeps ``phrases`` (default: ``[cache] phrases``) synthesised and pinned in ``cache``."""

    def __init__(
        self,
        settings: Settings,
        synth: Synthesizer,
        endpoint: str,
        cache: PhraseCache,
        phrases: tuple[Phrase, ...] | None = None,
    ) -> None:
        self._settings = settings
        self._synth = synth
        self._cache = cache
        self.phrases = settings.cache.phrases if phrases is None else phrases
        self._keys = {p: phrase_key(settings, endpoint, p.text, p.voice) for p in self.phrases}

    async def pin(self) -> None:
        """Pin exactly the configured phrases (earlier pins become evictable), in a thread: the
        index may wait for another process's write."""
        await asyncio.to_thread(self._cache.set_pinned, set(self._keys.values()))

    async def warm_once(
        self, progress: Callable[[WarmResult], None] | None = None
    ) -> list[WarmResult]:
        """Verify each phrase's entry; synthesise the missing or damaged ones, one at a time.

        Returns one result per phrase, in order; never raises for a provider failure.
        """
        results = []
        for phrase, key in self._keys.items():
            result = await self._warm(phrase, key)
            results.append(result)
            if progress is not None:
                progress(result)
        return results

    async def _warm(self, phrase: Phrase, key: str) -> WarmResult:
        # The index in a thread: it may wait for another process's write (busy timeout).
        if await asyncio.to_thread(self._cache.has, key):
            problem = await asyncio.to_thread(self._cache.verify, key)
            if problem is None:
                return WarmResult(phrase, "cached")
            log.warning("pinned phrase %r damaged (%s): synthesising again", phrase.text, problem)
        voice = phrase.voice or self._settings.tts.reference_id
        request = provider_request(self._settings, phrase.voice)
        flight = self._synth.flight(key, phrase.text, request, voice=voice, keep=True)
        try:
            async for _ in flight.follow():
                pass
        except EdgespeakError as exc:
            return WarmResult(phrase, "failed", exc)
        if await asyncio.to_thread(self._cache.has, key):
            return WarmResult(phrase, "stored")
        why = "is disabled" if not self._cache.usable else "did not store it"
        return WarmResult(phrase, "failed", CacheError(f"synthesised, but the phrase cache {why}"))

    async def run(self, tts: TtsClient) -> None:
        """Daemon task: pin, warm until every phrase is stored, then again after each outage.

        Phrases the provider refuses (unknown voice, 401…) are logged and left until the next
        outage ends; an unreachable provider is retried with backoff. Never raises.
        """
        await self.pin()
        backoff = Backoff(max_s=self._settings.tts.reconnect_max_s)
        while True:
            failures = 0
            while True:
                try:
                    await self._pass()  # raises TtsUnavailable only
                except TtsUnavailable:
                    failures += 1
                    await asyncio.sleep(backoff.after(failures))
                else:
                    break
            await tts.wait_back_up()

    async def _pass(self) -> None:
        results = await self.warm_once()
        failed = [r for r in results if r.outcome == "failed"]
        for r in failed:
            log.warning("could not pre-warm %r: %s", r.phrase.text, r.error)
        ready = len(results) - len(failed)
        log.info("phrase cache: %d of %d pinned phrases ready", ready, len(results))
        unreachable = [r.error for r in failed if isinstance(r.error, TtsUnavailable)]
        if unreachable:
            assert unreachable[0] is not None
            raise unreachable[0]
