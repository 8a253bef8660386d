"""The leader's path of a group announcement: plan it, play it, relay it (§16.3, §16.4).

Cache hit: the plan starts ``[group] margin_hit_ms`` from now; every node with the entry
plays it from disk, and a follower without it asks (``want``) and gets it relayed.

Miss: the one TTS session of the group runs here (a flight of the group's synthesizer,
which has no cache of its own). When its first PCM is in, the plan starts
``[group] margin_stream_ms`` later. Every chunk is encoded for the relay and published at
once; the leader plays the relay's own decoding of it, so every node plays the same bytes,
and it caches that decoding when the phrase is complete, as the followers do: next time
every node plays the same phrase from disk. When the provider cannot deliver, the
offline fallback's audio is relayed instead (plan source ``fallback``: never cached).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field

from edgespeak.base.announcement import Announcement
from edgespeak.base.errors import (
    AudioFormatError,
    EdgespeakError,
    TtsError,
    TtsUnavailable,
)
from edgespeak.base.events import Event, Source
from edgespeak.group.node import Node, gain, log, store, topic_key
from edgespeak.group.output import play_at
from edgespeak.group.plan import Plan, PlanSource
from edgespeak.group.relay import RelayDecoder, RelayEncoder
from edgespeak.providers.fish_request import announcement_request
from edgespeak.sources.cache import phrase_key
from edgespeak.speaking.speaker import prepend

PCM = AsyncGenerator[bytes, None]
OFFER_SLACK_S = 1.0  # a cached phrase stays offered this long past its planned end


@dataclass
class Offer:
    """A cached phrase the leader is playing: relayed once to whoever wants it."""

    pcm: bytes
    rate_hz: int
    relayed: bool = False


@dataclass
class Leading:
    """What this node leads now, by topic key: offers (cache hits) and relays under way."""

    offers: dict[str, Offer] = field(default_factory=dict)
    relays: dict[str, asyncio.Task[bytes]] = field(default_factory=dict)
    wanted: set[asyncio.Task[None]] = field(default_factory=set)  # relays of cached phrases

    def offer(self, key: str, offer: Offer, for_s: float) -> None:
        """Offer ``offer`` for the next ``for_s`` seconds."""
        self.offers[topic_key(key)] = offer

        def withdraw() -> None:
            if self.offers.get(topic_key(key)) is offer:
                del self.offers[topic_key(key)]

        asyncio.get_running_loop().call_later(max(0.0, for_s), withdraw)

    def want(self, node: Node, key: str) -> None:
        """A follower asked for ``key``: relay the offered phrase, once."""
        offer = self.offers.get(topic_key(key))
        if offer is None or offer.relayed:
            return
        offer.relayed = True
        log.info("relaying the cached group phrase %s on request", key)
        task = asyncio.create_task(_relay_cached(node, key, offer), name=f"relay-{key[:8]}")
        self.wanted.add(task)
        task.add_done_callback(self.wanted.discard)

    def outranked(self, key: str) -> None:
        """A lower leader planned ``key`` too: stop relaying it (§16.3)."""
        task = self.relays.pop(topic_key(key), None)
        if task is not None:
            task.cancel()


@dataclass
class _Audio:
    source: Source
    pcm: PCM
    rate_hz: int
    reason: str | None = None


async def lead(node: Node, leading: Leading, ann: Announcement) -> Event:
    """Plan and play ``ann`` (a group announcement) as its leader; returns its final event,
    published. Cancellation (interrupted, stopped) aborts the sound and the relay."""
    assert ann.group is not None and ann.group_key is not None
    key, g = ann.group_key, node.settings.group
    request = announcement_request(node.settings, ann)
    cache_key = phrase_key(node.settings, node.endpoint, ann.text, request=request)
    voice = request.get("reference_id")
    cached = await asyncio.to_thread(node.cache.get, cache_key) if node.cache else None
    start_at: float | None = None
    try:
        if cached is not None:
            start_local = node.clock.local.now() + g.margin_hit_ms / 1000
            plan = _plan(node, ann, start_local, "cache", cache_key, cached.rate_hz)
            start_at = node.mono(plan.start)
            # Offered until the phrase's planned end: a follower may ask after this node's
            # device has taken it all (a want comes back a broker round trip later).
            ends = start_local + len(cached.pcm) / 2 / cached.rate_hz + OFFER_SLACK_S
            leading.offer(key, Offer(cached.pcm, cached.rate_hz), ends - node.clock.local.now())
            playback = await play_at(
                node.sink, _one(cached.pcm), cached.rate_hz, start_at,
                lead_in_ms=ann.lead_in_ms, gain=gain(ann), on_begin=node.playing(ann, "cache"),
            )  # fmt: skip
            return node.finished(
                ann, "cache", playback, node.report(key, node.node_id, playback, start_at)
            )
        audio = await _first_audio(node, ann, cache_key, request)
        start_local = node.clock.local.now() + g.margin_stream_ms / 1000
        source: PlanSource = "stream" if audio.source == "stream" else "fallback"
        plan = _plan(node, ann, start_local, source, cache_key, audio.rate_hz)
        start_at = node.mono(plan.start)
        local: asyncio.Queue[bytes | None] = asyncio.Queue()
        relay = asyncio.create_task(_relay(node, key, audio, local), name=f"relay-{key[:8]}")
        leading.relays[topic_key(key)] = relay
        try:
            playback = await play_at(
                node.sink, _drain(local), audio.rate_hz, start_at,
                lead_in_ms=ann.lead_in_ms, gain=gain(ann),
                on_begin=node.playing(ann, audio.source),
            )  # fmt: skip
            pcm = await relay if not relay.cancelled() else b""
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
            if leading.relays.get(topic_key(key)) is relay:
                del leading.relays[topic_key(key)]
        if audio.source == "stream" and pcm:
            await store(node, cache_key, pcm, audio.rate_hz, ann.text, voice)
        report = node.report(key, node.node_id, playback, start_at)
        return node.finished(ann, audio.source, playback, report, reason=audio.reason)
    except EdgespeakError as exc:
        return node.failed(ann, str(exc), None, node.report(key, node.node_id, None, start_at))


async def _relay_cached(node: Node, key: str, offer: Offer) -> None:
    """Relay a cached phrase, encoded a second of audio at a time on a thread (a long phrase
    would hold the event loop for a while on a Pi), each part published as it is ready."""
    encoder = RelayEncoder(offer.rate_hz)
    step = 2 * offer.rate_hz  # bytes of one second
    for at in range(0, len(offer.pcm), step):
        for message in await asyncio.to_thread(encoder.feed, offer.pcm[at : at + step]):
            node.send(node.topics.audio(key), message, 1)
    for message in encoder.finish():
        node.send(node.topics.audio(key), message, 1)


def _plan(
    node: Node, ann: Announcement, start_local: float, source: PlanSource, cache_key: str,
    rate_hz: int,
) -> Plan:  # fmt: skip
    """Publish the plan starting at local time ``start_local`` (s); returns it."""
    assert ann.group is not None and ann.group_key is not None
    plan = Plan(
        ann.group_key, node.node_id, ann.group, node.clock.to_group(start_local), source,
        cache_key, rate_hz, ann.priority,
    )  # fmt: skip
    node.send(node.topics.plan, plan.to_json(), 1)
    log.info("planned group announcement %s (%s) to start at group time %.3f", plan.key,
             source, plan.start)  # fmt: skip
    return plan


async def _relay(node: Node, key: str, audio: _Audio, local: asyncio.Queue[bytes | None]) -> bytes:
    """Encode ``audio`` for the relay, publish each message at once, and queue the relay's
    own decoding of it on ``local`` (None at the end). Returns all the decoded PCM when the
    phrase came complete. Cancelled or failing, it publishes an ``ABORT`` so the followers
    neither wait for more nor cache a part; a failure of the source is raised after that."""
    topic = node.topics.audio(key)
    encoder, decoder = RelayEncoder(audio.rate_hz), RelayDecoder(audio.rate_hz)
    played = bytearray()

    def out(messages: list[bytes]) -> None:
        for message in messages:
            node.send(topic, message, 1)
            pcm = decoder.feed(message)
            played.extend(pcm)
            local.put_nowait(pcm)

    try:
        async for chunk in audio.pcm:
            out(encoder.feed(chunk))
        out(encoder.finish())
    except BaseException:
        node.send(topic, encoder.abort(), 1)
        raise
    finally:
        local.put_nowait(None)
        await audio.pcm.aclose()
    return bytes(played)


async def _first_audio(
    node: Node, ann: Announcement, cache_key: str, request: dict[str, object]
) -> _Audio:
    """The provider's PCM once its first chunk is in; else the fallback's. Raises the
    provider's error (TtsError, AudioFormatError) when there is no fallback."""
    voice = request.get("reference_id")
    flight = node.synth.flight(cache_key, ann.text, dict(request),
                               voice=voice if isinstance(voice, str) else None)  # fmt: skip
    pcm = flight.follow()
    timeout_s = node.settings.tts.first_audio_timeout_ms / 1000
    try:
        async with asyncio.timeout(timeout_s):
            first = await anext(pcm)
    except (TtsError, AudioFormatError, TimeoutError) as exc:
        await pcm.aclose()
        problem: EdgespeakError = (
            TtsUnavailable(f"no audio from the provider within {timeout_s:g} s")
            if isinstance(exc, TimeoutError)
            else exc
        )
        if node.fallback is None:
            raise problem from exc
        live = node.fallback.live()
        spoken = live.synthesize(ann.text)
        head = await anext(spoken)
        log.warning("group announcement %s from the fallback: %s", ann.id, problem)
        return _Audio("fallback", prepend(head, spoken), live.rate_hz, str(problem))
    assert flight.rate_hz is not None
    return _Audio("stream", prepend(first, pcm), flight.rate_hz)


async def _one(pcm: bytes) -> PCM:
    yield pcm


async def _drain(queue: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
    while (pcm := await queue.get()) is not None:
        if pcm:
            yield pcm
