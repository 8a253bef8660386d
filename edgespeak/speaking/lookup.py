"""The phrase-cache lookup of the announcement that plays next, started ahead of its speaking.

The scheduler tells the speaker which announcement plays next as soon as it is queued
(:meth:`~edgespeak.speaking.speaker.Speaker.prepare`). Its lookup (provider request, phrase
key, the WAV read and checked against its index row) starts then in a worker thread, while the
event loop publishes the ``received`` event and hops to the speaking task; by the time the
announcement is spoken its audio has been read. On a hit the worker thread also primes the
sink (:meth:`~edgespeak.audio.alsa.AlsaSink.prime`): the ALSA writer takes keep-open silence
back while the event loop is still handing the audio over. The hit is recorded in the index
once the audio plays (:meth:`~edgespeak.sources.cache.PhraseCache.record_hit`), off the path
to the first sound.
"""

from __future__ import annotations

import asyncio
from typing import Any

from edgespeak.audio.alsa import AlsaSink
from edgespeak.base.announcement import Announcement
from edgespeak.config import Settings
from edgespeak.providers.fish_request import announcement_request
from edgespeak.sources.cache import CachedPhrase, PhraseCache, phrase_key

Lookup = tuple[dict[str, Any], str, CachedPhrase | None]  # request, phrase key, cached phrase


class CacheLookup:
    """Looks announcements up in ``cache`` (None: every lookup misses) for the provider at
    ``endpoint``; primes ``sink`` when the index has the phrase, if asked to."""

    def __init__(
        self, settings: Settings, endpoint: str, cache: PhraseCache | None, sink: AlsaSink
    ) -> None:
        self._settings = settings
        self._endpoint = endpoint
        self._cache = cache
        self._sink = sink
        self._ahead: tuple[Announcement, asyncio.Future[Lookup]] | None = None

    def start(self, ann: Announcement) -> None:
        """Start looking ``ann`` up now, in a worker thread, priming the sink once the index
        has it (``ann`` plays next, as soon as it can); replaces a lookup started so and not
        used. Nothing for a media URL or a ready sound. Never raises (an error is met by
        :meth:`result`)."""
        if self._cache is None or ann.url is not None or ann.sound is not None:
            return
        self.forget()
        loop = asyncio.get_running_loop()
        self._ahead = (ann, loop.run_in_executor(None, self._look_up, ann, True))

    async def result(self, ann: Announcement, prime: bool) -> Lookup:
        """``ann``'s provider request, phrase key and verified cached phrase (None: a miss; no
        hit recorded): the lookup :meth:`start` began for it, else one made now (in a worker
        thread: the index may wait for a CLI process's write, its sqlite busy timeout),
        priming the sink when the index has it and ``prime``. Raises what building the request
        raises."""
        if self._ahead is not None and self._ahead[0] is ann:
            fut, self._ahead = self._ahead[1], None
            return await fut
        self.forget()
        if self._cache is None:
            return self._look_up(ann, False)
        return await asyncio.get_running_loop().run_in_executor(None, self._look_up, ann, prime)

    def record_hit(self, phrase: CachedPhrase) -> None:
        """Count a hit of ``phrase`` in the index (blocks on sqlite: call it in a thread)."""
        if self._cache is not None:
            self._cache.record_hit(phrase)

    def forget(self) -> None:
        """Drop a lookup started ahead and not used (its outcome is not wanted)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and not ahead[1].cancel() and not ahead[1].cancelled():
            ahead[1].exception()  # done: retrieved, so that asyncio does not log it

    def _look_up(self, ann: Announcement, prime: bool) -> Lookup:
        request = announcement_request(self._settings, ann)
        key = phrase_key(self._settings, self._endpoint, ann.text, request=request)
        if self._cache is None:
            return request, key, None
        found = self._sink.prime if prime else None  # the index has it: the file is read next
        return request, key, self._cache.get(key, record_hit=False, found=found)
