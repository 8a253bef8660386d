"""Pre-warmed phrases: ``[cache] phrases`` synthesised ahead of time and pinned in the cache.

At daemon startup every configured phrase is checked (verified, not just looked up) and the
missing or damaged ones are synthesised through the provider in the background, retried with
jittered capped backoff while the provider is unreachable. Whenever the provider comes back
after an outage, the pass runs again, so entries dropped meanwhile are filled as soon as
possible. The same pass backs ``edgespeak cache warm``.

With a Piper ``[fallback] voice`` (its worker ready), a phrase the provider cannot render is
rendered with Piper instead, however slow (this is background work), and stored under the
phrase's own key, so the announcement plays it from the cache at once; the provider's
rendering replaces it when the provider can render it again (the best voice available wins).
Such entries are recognised by the voice recorded in the cache index.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_never,
)

from edgespeak.base.backoff import Backoff
from edgespeak.base.errors import CacheError, EdgespeakError, TtsUnavailable
from edgespeak.config import Phrase, Settings
from edgespeak.providers.client import TtsClient
from edgespeak.providers.fish_request import provider_request
from edgespeak.sources.cache import PhraseCache, phrase_key
from edgespeak.sources.fallback import Fallback
from edgespeak.sources.synthesis import Synthesizer
from edgespeak.sources.text import strip_markers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmResult:
    """One phrase's outcome: ``stored`` (synthesised now), ``cached`` (was good), ``fallback``
    (the provider failed with ``error``; stored, or kept, as the Piper fallback voice rendered
    it) or ``failed``."""

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
        *,
        fallback: Fallback | None = None,
    ) -> None:
        self._settings = settings
        self._synth = synth
        self._cache = cache
        self._fallback = fallback
        self._tts: TtsClient | None = None  # in the daemon: Piper's renderings wait for it
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
        await self._note_rendered()
        results = []
        for phrase, key in self._keys.items():
            result = await self._warm(phrase, key)
            results.append(result)
            if progress is not None:
                progress(result)
        return results

    async def _note_rendered(self) -> None:
        """Fill ``fallback.rendered`` with the pinned entries the Piper fallback voice made
        (the index records that voice; the provider is asked for another)."""
        if self._fallback is None or self._fallback.piper is None:
            return
        piper = self._fallback.piper.voice
        entries = await asyncio.to_thread(self._cache.entries)
        by_key = {e.key: e.voice for e in entries}
        for phrase, key in self._keys.items():
            asked = provider_request(self._settings, phrase.voice).get("reference_id")
            if by_key.get(key) == piper and asked != piper:
                self._fallback.rendered[key] = piper
            else:
                self._fallback.rendered.pop(key, None)

    async def _warm(self, phrase: Phrase, key: str) -> WarmResult:
        rendered = self._fallback is not None and key in self._fallback.rendered
        # The index in a thread: it may wait for another process's write (busy timeout).
        if await asyncio.to_thread(self._cache.has, key):
            problem = await asyncio.to_thread(self._cache.verify, key)
            if problem is None and not rendered:
                return WarmResult(phrase, "cached")
            if problem is not None:
                log.warning(
                    "pinned phrase %r damaged (%s): synthesising again", phrase.text, problem
                )
            elif self._tts is not None and not self._tts.reachable:
                unreachable = TtsUnavailable("the provider is unreachable")
                return WarmResult(phrase, "fallback", unreachable)  # keep Piper's for now
            else:  # the provider is back: its rendering replaces the fallback's
                log.info("pinned phrase %r: replacing Piper's rendering", phrase.text)
                await asyncio.to_thread(self._cache.remove, key)
            if self._fallback is not None:
                self._fallback.rendered.pop(key, None)
        voice = phrase.voice or self._settings.tts.reference_id
        request = provider_request(self._settings, phrase.voice)
        flight = self._synth.flight(key, phrase.text, request, voice=voice, keep=True)
        try:
            async for _ in flight.follow():
                pass
        except EdgespeakError as exc:
            return await self._render(phrase, key, exc)
        if await asyncio.to_thread(self._cache.has, key):
            return WarmResult(phrase, "stored")
        why = "is disabled" if not self._cache.usable else "did not store it"
        return WarmResult(phrase, "failed", CacheError(f"synthesised, but the phrase cache {why}"))

    async def _render(self, phrase: Phrase, key: str, error: EdgespeakError) -> WarmResult:
        """Render ``phrase`` with the Piper fallback voice into the cache under ``key``; the
        result says ``fallback`` when stored, else ``failed`` with the provider's ``error``."""
        piper = self._fallback.renderer if self._fallback is not None else None
        if piper is None or not self._cache.usable:
            return WarmResult(phrase, "failed", error)
        log.info("rendering pinned phrase %r with Piper voice %s", phrase.text, piper.voice)
        try:  # in threads, as the index may wait for another process's write
            writer = await asyncio.to_thread(
                self._cache.writer, key, piper.rate_hz, text=phrase.text, voice=piper.voice
            )
        except OSError as exc:
            log.warning("phrase cache write failed, not caching %r: %s", phrase.text, exc)
            writer = None
        if writer is None:
            return WarmResult(phrase, "failed", error)
        try:
            async for pcm in self._fallback_speech(phrase.text):
                await asyncio.to_thread(writer.write, pcm)
            stored = await asyncio.to_thread(writer.commit)
        except (EdgespeakError, OSError) as exc:
            writer.discard()
            log.warning("Piper could not render pinned phrase %r: %s", phrase.text, exc)
            return WarmResult(phrase, "failed", error)
        except BaseException:
            writer.discard()
            raise
        if stored is None:
            return WarmResult(phrase, "failed", error)
        assert self._fallback is not None
        self._fallback.rendered[key] = piper.voice
        return WarmResult(phrase, "fallback", error)

    def _fallback_speech(self, text: str) -> AsyncGenerator[bytes, None]:
        assert self._fallback is not None and self._fallback.piper is not None
        return self._fallback.piper.synthesize(strip_markers(text))

    async def run(self, tts: TtsClient) -> None:
        """Daemon task: pin, warm until every phrase is stored, then again after each outage.

        Phrases the provider refuses (unknown voice, 401…) are logged and left until the next
        outage ends; an unreachable provider is retried with backoff. Never raises.
        """
        self._tts = tts
        await self.pin()
        backoff = Backoff(max_s=self._settings.tts.reconnect_max_s)
        while True:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(TtsUnavailable), wait=backoff, stop=stop_never
            ):
                with attempt:
                    await self._pass()  # raises TtsUnavailable only
            await tts.wait_back_up()

    async def _pass(self) -> None:
        results = await self.warm_once()
        failed = [r for r in results if r.outcome == "failed"]
        for r in failed:
            log.warning("could not pre-warm %r: %s", r.phrase.text, r.error)
        ready = len(results) - len(failed)
        by_piper = sum(r.outcome == "fallback" for r in results)
        log.info(
            "phrase cache: %d of %d pinned phrases ready%s", ready, len(results),
            f" ({by_piper} rendered by the Piper fallback voice)" if by_piper else "",
        )  # fmt: skip
        retry = [r for r in results if r.outcome in ("failed", "fallback")]
        unreachable = [r.error for r in retry if isinstance(r.error, TtsUnavailable)]
        if unreachable:
            assert unreachable[0] is not None
            raise unreachable[0]
