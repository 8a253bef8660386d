"""A follower's path of a group announcement: wait for the leader's plan, then play the
phrase from its own cache or from the relay at the plan's instant (§16.3, §16.4).

- The plan is waited for at most the announcement's ``ttl_s`` (payload, else ``[daemon]
  ttl_s``). Should the leader go away (its availability ``offline``) before planning, the
  next lowest member leads; when that is this node, it leads (:func:`edgespeak.group.lead.lead`).
- Plan ``cache``: the entry ``cache_key`` from disk; without it, a ``want`` to the leader and
  the relay. Plan ``stream``/``fallback``: the relay.
- The relay is decoded as it comes and played from the plan's start (mapped through the group
  clock; frames already past are skipped, so a late node joins in step). A complete relay
  (END, frame count matching) of a ``stream`` or ``cache`` plan is written to the cache under
  ``cache_key``: next time this node plays it from disk.
- The leader gone (its availability ``offline``, or no relay message for twice ``[group]
  margin_stream_ms`` beyond the audio received and not yet played): what came plays out, in
  step, then ``failed``: "the group's leader <id> went away after <s> s" (seconds of audio
  received). Never paused and resumed.
- A clock not synced: plays at once, unsynchronised; the event says so.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from edgespeak.base.announcement import Announcement
from edgespeak.base.errors import EdgespeakError
from edgespeak.base.events import Event, Source
from edgespeak.group.inbox import RelayGap
from edgespeak.group.node import Node, gain, log, store, topic_key
from edgespeak.group.output import play_at
from edgespeak.group.plan import Plan, choose_leader
from edgespeak.group.relay import RelayDecoder, RelayError
from edgespeak.providers.fish_request import announcement_request

PLAN_EARLY_S = 2.0  # a plan may arrive this long before its announcement (other paths)
Lead = Callable[[Announcement], Awaitable[Event]]


def leader_of(node: Node, target: str) -> str:
    """The leader of an announcement to ``target``: the lowest live syncing member, this node
    when none is known (alone, or the members not heard yet)."""
    return choose_leader(node.roster.members(target)) or node.node_id


async def follow(node: Node, ann: Announcement, lead: Lead) -> Event:
    """Play ``ann`` (a group announcement) as a follower; returns its final event, published.
    ``lead``: this node's leader path, taken when the leader goes away before planning and
    this node is next. Cancellation (interrupted, stopped) aborts the sound."""
    assert ann.group is not None and ann.group_key is not None
    key, target = ann.group_key, ann.group
    ttl_s = ann.ttl_s if ann.ttl_s is not None else node.settings.daemon.ttl_s
    deadline = ann.received_at + ttl_s
    leader = leader_of(node, target)
    seen = node.plans.version
    while (got := node.plans.take(key, ann.received_at - PLAN_EARLY_S)) is None:
        if not node.roster.is_live(leader):  # gone (not a member list still filling in)
            leader = leader_of(node, target)
            if leader == node.node_id:
                log.info("the group's leader went away before planning %s: leading it", key)
                return await lead(ann)
        left = deadline - time.monotonic()
        if left <= 0:
            error = f"no plan from the group's leader {leader} within {ttl_s:g} s"
            return node.failed(ann, error, None, node.report(key, leader, None, None))
        await node.plans.changed(seen, left)
        seen = node.plans.version
    plan = got.plan
    start_at = node.mono(plan.start)
    try:
        if plan.source == "cache" and node.cache is not None:
            cached = await asyncio.to_thread(node.cache.get, plan.cache_key)
            if cached is not None:
                playback = await play_at(
                    node.sink, _one(cached.pcm), cached.rate_hz, start_at,
                    lead_in_ms=ann.lead_in_ms, gain=gain(ann),
                    on_begin=node.playing(ann, "cache"),
                )  # fmt: skip
                report = node.report(key, plan.leader, playback, start_at)
                return node.finished(ann, "cache", playback, report)
        if plan.source == "cache":  # not here: ask the leader to relay it
            want = json.dumps({"key": plan.key}).encode()
            node.send(node.topics.want(plan.leader), want, 1)
        return await _from_relay(node, ann, plan, got.arrived, start_at)
    except EdgespeakError as exc:
        return node.failed(ann, str(exc), None, node.report(key, plan.leader, None, start_at))


async def _from_relay(
    node: Node, ann: Announcement, plan: Plan, arrived: float, start_at: float | None
) -> Event:
    source: Source = "relay"
    decoder = RelayDecoder(plan.rate_hz)
    received = bytearray()
    gone: list[str] = []  # why the relay stopped early, if it did
    began: list[float] = [] if start_at is None else [start_at]  # monotonic s of frame 0

    def ahead_s() -> float:
        """Seconds of audio received and not played yet."""
        if not began:
            return 0.0
        return began[0] + decoder.frames / plan.rate_hz - time.monotonic()

    def leader_gone() -> str | None:
        if node.roster.is_live(plan.leader):
            return None
        return "its availability went offline"

    async def pcm() -> AsyncIterator[bytes]:
        messages = node.inbox.read(
            topic_key(plan.key), not_before=arrived - PLAN_EARLY_S,
            gap_s=2 * node.settings.group.margin_stream_ms / 1000, ahead_s=ahead_s,
            gone=leader_gone,
        )  # fmt: skip
        try:
            async for message in messages:
                out = decoder.feed(message)
                received.extend(out)
                if out:
                    if not began:  # unsynchronised: it plays from now
                        began.append(time.monotonic())
                    yield out
                if decoder.ended:
                    return
        except RelayGap as gap:
            log.warning("relay of %s stopped: %s", plan.key, gap)
            gone.append(f"the group's leader {plan.leader} went away after "
                        f"{decoder.frames / plan.rate_hz:.1f} s")  # fmt: skip
        except RelayError as exc:
            gone.append(f"the relay from the group's leader {plan.leader} broke: {exc}")
        finally:
            await messages.aclose()

    try:
        playback = await play_at(
            node.sink, pcm(), plan.rate_hz, start_at, lead_in_ms=ann.lead_in_ms,
            gain=gain(ann), on_begin=node.playing(ann, source),
        )  # fmt: skip
    except EdgespeakError:
        if not gone:
            raise
        return node.failed(ann, gone[0], source, node.report(plan.key, plan.leader, None, start_at))
    report = node.report(plan.key, plan.leader, playback, start_at)
    if gone:
        return node.failed(ann, gone[0], source, report)
    if decoder.aborted:
        error = f"the group's leader {plan.leader} ended its relay early"
        return node.failed(ann, error, source, report)
    if plan.source != "fallback" and decoder.ended:  # the whole phrase, END count matched
        voice = announcement_request(node.settings, ann).get("reference_id")
        voice = voice if isinstance(voice, str) else None
        await store(node, plan.cache_key, bytes(received), plan.rate_hz, ann.text, voice)
    return node.finished(ann, source, playback, report)


async def _one(pcm: bytes) -> AsyncIterator[bytes]:
    yield pcm
