"""Provider synthesis with single flight: one stream per phrase, however many want it.

A :class:`Flight` is one provider session for one cache key, decoded to PCM as it arrives (Opus
in a thread, off the event loop) and teed into the phrase cache on a thread of its own (the
audio is handed on first and never waits for the disk). Everyone who wants that phrase while
the flight is under way (two announcements of the same doorbell phrase, an announcement racing
the startup pre-warm) follows the same flight from its first chunk instead of starting a second
session. The cache entry is committed only when the provider ended the session with ``finish``
(reason ``stop``) and sent audio. A flight nobody follows any more is cancelled, unless it was
started to fill the cache (``keep``), which runs to the end.

A flight can be joined from its start only while it holds every chunk: until it ends, or until
it has produced :data:`JOIN_WINDOW_BYTES` (then the next request for the phrase starts a
session of its own). From then on each chunk is dropped once every follower has passed it, so
a long stream holds only what its followers have not played yet, not the whole phrase (a
10-minute stream at 22050 Hz is 26 MiB of PCM).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from edgespeak.audio.formats import make_decoder
from edgespeak.base.errors import TtsProtocolError, TtsUnavailable
from edgespeak.providers.client import TtsClient
from edgespeak.sources.cache import CacheWriter, PhraseCache

log = logging.getLogger(__name__)
JOIN_WINDOW_BYTES = 1024 * 1024  # 24 s of PCM at 22050 Hz, 11 s at 48 kHz
# Decoded in a thread, chunk by chunk: a provider faster than real time delivers seconds of Opus
# at once, and libopus on the event loop held it ~20 ms per second of audio here (5-10 times
# that on a Pi). libopus releases the GIL: the loop runs meanwhile.
DECODED_IN_THREAD = frozenset({"opus"})


class Flight:
    """One synthesis of one phrase: bytes of s16le mono PCM at :attr:`rate_hz` Hz, in chunks.

    ``joinable``: a new follower may still start from the first chunk (see the module's
    docstring); once False, chunks every follower has passed are dropped.
    """

    def __init__(self, key: str, *, keep: bool) -> None:
        self.key = key
        self.keep = keep
        self.rate_hz: int | None = None
        self.produced = 0  # chunks added so far
        self.produced_bytes = 0
        self.joinable = True
        self.done = False
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None
        self._chunks: deque[bytes] = deque()  # chunks self._first ... self.produced - 1
        self._first = 0
        self._positions: dict[int, int] = {}  # follower -> index of the next chunk it reads
        self._ids = itertools.count()
        self._tick = asyncio.get_running_loop().create_future()

    @property
    def held_bytes(self) -> int:
        """Bytes of PCM held for followers now."""
        return sum(map(len, self._chunks))

    def _changed(self) -> None:
        tick, self._tick = self._tick, asyncio.get_running_loop().create_future()
        tick.set_result(None)

    def add(self, pcm: bytes, rate_hz: int) -> None:
        """Append a chunk of PCM at ``rate_hz`` Hz and wake the followers."""
        self.rate_hz = rate_hz
        self._chunks.append(pcm)
        self.produced += 1
        self.produced_bytes += len(pcm)
        self._trim()
        self._changed()

    def end(self, error: BaseException | None = None) -> None:
        """Mark the flight complete (``error`` None) or failed, and wake the followers."""
        self.done, self.error = True, error
        self._changed()

    def close_joining(self) -> None:
        """No follower may start any more: drop what every follower has passed, from now on."""
        self.joinable = False
        self._trim()

    def _trim(self) -> None:
        if self.joinable:
            return
        passed = min(self._positions.values(), default=self.produced)
        while self._first < passed:
            self._chunks.popleft()
            self._first += 1

    async def follow(self) -> AsyncGenerator[bytes, None]:
        """Yield every chunk from the first, as the flight produces them.

        Raises whatever ended the flight (TtsUnavailable, TtsRejected, TtsProtocolError,
        AudioFormatError); TtsUnavailable when the first chunk was dropped already (a flight
        no longer joinable, which :meth:`Synthesizer.flight` never hands out). Leaving early
        cancels the flight when nobody else follows it and it is not ``keep``.
        """
        if self._first > 0:
            raise TtsUnavailable("the synthesis of this phrase can no longer be joined")
        me = next(self._ids)
        self._positions[me] = 0
        try:
            i = 0
            while True:
                while i < self.produced:
                    chunk = self._chunks[i - self._first]
                    i += 1
                    self._positions[me] = i
                    self._trim()
                    yield chunk
                if self.done:
                    if self.error is not None:
                        raise self.error
                    return
                await asyncio.shield(self._tick)
        finally:
            del self._positions[me]
            self._trim()
            if not self._positions and not self.keep and not self.done and self.task:
                self.task.cancel()


class Synthesizer:
    """Starts or joins provider flights; ``flights`` holds those that can still be joined, by
    cache key."""

    def __init__(self, tts: TtsClient, fmt: str, rate_hz: int, cache: PhraseCache | None):
        self._tts = tts
        self._format = fmt
        self._rate_hz = rate_hz
        self._cache = cache
        self.flights: dict[str, Flight] = {}
        self._under_way: set[Flight] = set()  # joinable or not, until they land

    def flight(
        self,
        key: str,
        text: str,
        request: dict[str, Any],
        *,
        voice: str | None,
        keep: bool = False,
    ) -> Flight:
        """The flight for ``key``: the one under way, else a new provider session for ``text``.

        ``request``: the provider request
        (:func:`edgespeak.providers.fish_request.provider_request`);
        ``voice`` is recorded in the cache index.
        ``keep``: run to the end even if nobody follows (cache filling). Joining a flight
        started without ``keep`` with ``keep=True`` upgrades it.
        """
        flight = self.flights.get(key)
        if flight is not None:
            flight.keep = flight.keep or keep
            return flight
        flight = Flight(key, keep=keep)
        self.flights[key] = flight
        self._under_way.add(flight)
        flight.task = asyncio.create_task(
            self._produce(flight, text, request, voice), name=f"synthesis-{key[:8]}"
        )
        flight.task.add_done_callback(lambda _: self._landed(flight))
        return flight

    def _landed(self, flight: Flight) -> None:
        self._unlist(flight)
        self._under_way.discard(flight)
        if not flight.done:  # cancelled before it started
            flight.end(TtsUnavailable("synthesis cancelled"))

    async def _produce(
        self, flight: Flight, text: str, request: dict[str, Any], voice: str | None
    ) -> None:
        decoder = make_decoder(self._format, self._rate_hz)
        tee = _CacheTee(self._cache, flight.key, text, voice)
        try:
            async for chunk in self._tts.stream(text, request):
                if self._format in DECODED_IN_THREAD:
                    pcm = await asyncio.to_thread(decoder.feed, chunk)
                else:
                    pcm = decoder.feed(chunk)
                if pcm:
                    self._add(flight, tee, pcm, decoder.rate_hz)
            if tail := decoder.finish():
                self._add(flight, tee, tail, decoder.rate_hz)
            if not flight.produced:
                raise TtsProtocolError("the provider finished without sending audio")
        except Exception as exc:
            tee.discard()
            flight.end(exc)
        except BaseException:  # cancelled: nobody follows any more, or shutdown
            tee.discard()
            flight.end(TtsUnavailable("synthesis cancelled"))
            raise
        else:
            await tee.commit()
            flight.end()

    def _add(self, flight: Flight, tee: _CacheTee, pcm: bytes, rate_hz: int | None) -> None:
        assert rate_hz is not None, "decoders know their rate once they yield PCM"
        flight.add(pcm, rate_hz)
        tee.write(pcm, rate_hz)
        if flight.joinable and flight.produced_bytes > JOIN_WINDOW_BYTES:
            self._unlist(flight)  # the next request for this phrase starts its own session

    def _unlist(self, flight: Flight) -> None:
        """``flight`` takes no more followers."""
        if self.flights.get(flight.key) is flight:
            del self.flights[flight.key]
        flight.close_joining()

    async def close(self) -> None:
        """Cancel every flight under way (shutdown)."""
        tasks = [f.task for f in self._under_way if f.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


class _CacheTee:
    """Copies a flight's PCM into the phrase cache on a thread of its own, so the disk (file
    creation, writes, fsync, the index lock) never holds up the audio: :meth:`write` queues
    and returns at once, the thread runs the steps in order. A cache failure only stops the
    copy (logged at WARNING)."""

    def __init__(self, cache: PhraseCache | None, key: str, text: str, voice: str | None):
        self._cache = cache
        self._key = key
        self._text = text
        self._voice = voice
        self._thread: ThreadPoolExecutor | None = None  # created with the first write
        self._writer: CacheWriter | None = None  # used on that thread only
        self._failed = False

    def write(self, pcm: bytes, rate_hz: int) -> None:
        """Queue ``pcm`` (s16le mono at ``rate_hz`` Hz) for the cache; returns at once."""
        if self._failed or self._cache is None:
            return
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"cache-{self._key[:8]}")
        self._thread.submit(self._write, self._cache, pcm, rate_hz)

    def _write(self, cache: PhraseCache, pcm: bytes, rate_hz: int) -> None:
        if self._failed:
            return
        try:
            if self._writer is None:
                self._writer = cache.writer(self._key, rate_hz, text=self._text, voice=self._voice)
                if self._writer is None:
                    self._failed = True
                    return
            self._writer.write(pcm)
        except OSError as exc:
            log.warning("phrase cache write failed, not caching this phrase: %s", exc)
            self._drop()
        except Exception:
            log.exception("phrase cache write failed, not caching this phrase")
            self._drop()

    async def commit(self) -> None:
        """Store the entry once the queued writes are done (it fsyncs and may wait for the
        index lock); the stream did finish, so a cancellation meanwhile does not stop it."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            await asyncio.shield(asyncio.wrap_future(thread.submit(self._commit)))
        finally:
            thread.shutdown(wait=False)

    def _commit(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None or self._failed:
            return
        try:
            writer.commit()
        except OSError as exc:
            log.warning("phrase cache commit failed: %s", exc)

    def discard(self) -> None:
        """Drop what was copied (on the cache thread, after the writes queued before);
        returns at once."""
        self._failed = True
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.submit(self._drop)
            thread.shutdown(wait=False)

    def _drop(self) -> None:
        self._failed = True
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.discard()
