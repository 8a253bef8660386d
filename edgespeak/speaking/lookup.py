"""The phrase-cache lookup of the announcement that plays next, started ahead of its speaking.

The scheduler tells the speaker which announcement plays next as soon as it is queued
(:meth:`~edgespeak.speaking.speaker.Speaker.prepare`). Its lookup (provider request, phrase
key, the WAV read and checked against its index row) starts then in a worker thread, while the
event loop publishes the ``received`` event and hops to the speaking task; by the time the
announcement is spoken its audio has been read. A phrase said lately whose file can be read
without waiting for a disk is read at once on the event loop instead
(:meth:`~edgespeak.sources.cache.PhraseCache.get_now`), saving the two thread wake-ups of the
hop. The sink is primed then too
(:meth:`~edgespeak.audio.alsa.AlsaSink.prime`; an MQTT announce message has primed it on
arrival already): the ALSA writer takes keep-open silence back, or prepares a drained device,
while the audio is read and handed over. A lookup not started ahead primes the sink once the
index has the phrase. The hit is recorded in the index once the audio plays
(:meth:`~edgespeak.sources.cache.PhraseCache.record_hit`), off the path to the first sound.

The provider request and phrase key of the last :data:`KEYS_KEPT` texts are kept (they depend
only on the text, the announcement's voice options and the settings, which do not change while
the daemon runs): on a machine slow to wake, building them again was a millisecond of the
lookup of a phrase said again, as a doorbell's is.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from edgespeak.audio.alsa import AlsaSink
from edgespeak.base.announcement import Announcement, Latency
from edgespeak.config import Settings
from edgespeak.providers.fish_request import announcement_request
from edgespeak.sources.cache import CachedPhrase, PhraseCache, phrase_key

Lookup = tuple[dict[str, Any], str, CachedPhrase | None]  # request, phrase key, cached phrase
KEYS_KEPT = 256  # (request, key) pairs kept, most recently used


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
        self._keys = functools.lru_cache(maxsize=KEYS_KEPT)(self._request_key)

    def start(self, ann: Announcement) -> None:
        """``ann`` plays next, as soon as it can: prime the sink now and look ``ann`` up (at
        once if :meth:`PhraseCache.get_now` can, else in a worker thread); replaces a lookup
        started so and not used. A ready sound only
        primes the sink; a media URL does neither (its first audio is a download away). Never
        raises (an error is met by :meth:`result`)."""
        if ann.url is not None:
            return
        self._sink.prime()
        if self._cache is None or ann.sound is not None:
            return
        self.forget()
        loop = asyncio.get_running_loop()
        if (now := self._look_up_now(ann)) is None:
            fut = loop.run_in_executor(None, self._look_up, ann, False)
        else:
            fut = loop.create_future()
            fut.set_result(now)
        self._ahead = (ann, fut)

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
        if (now := self._look_up_now(ann)) is not None:
            if prime:
                self._sink.prime()
            return now
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

    def _request_key(
        self,
        text: str,
        voice: str | None,
        speed: float | None,
        volume_db: float | None,
        latency: Latency | None,
    ) -> tuple[dict[str, Any], str]:
        """The provider request and phrase key of ``text`` with these options (memoised in
        :attr:`_keys`: the request is shared, read it only). Raises ValueError as
        :func:`phrase_key` does."""
        ann = Announcement(text, voice=voice, speed=speed, volume_db=volume_db, latency=latency)
        request = announcement_request(self._settings, ann)
        return request, phrase_key(self._settings, self._endpoint, text, request=request)

    def _look_up_now(self, ann: Announcement) -> Lookup | None:
        """``ann``'s lookup made on this thread, if its phrase is a hit that can be read without
        waiting for a disk (:meth:`PhraseCache.get_now`: said lately, its file in the page
        cache), else None: a miss, or a hit to read in a thread. The request and key are
        memoised (a text not seen lately has them built here, CPU only, and the thread then
        finds them kept); an error building them is left to the thread's lookup, which
        raises it."""
        if self._cache is None:
            return None
        try:
            request, key = self._keys(ann.text, ann.voice, ann.speed, ann.volume_db, ann.latency)
        except ValueError:
            return None
        phrase = self._cache.get_now(key)
        return None if phrase is None else (request, key, phrase)

    def _look_up(self, ann: Announcement, prime: bool) -> Lookup:
        request, key = self._keys(ann.text, ann.voice, ann.speed, ann.volume_db, ann.latency)
        if self._cache is None:
            return request, key, None
        found = self._sink.prime if prime else None  # the index has it: the file is read next
        return request, key, self._cache.get(key, record_hit=False, found=found)
