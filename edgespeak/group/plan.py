"""Group plans: which node leads an announcement, and the instant every node starts it.

A group announcement (docs/protocols.md §16.2) is played by every member of its target from
one instant on the group clock. Its **leader**, the lowest ``node_id`` among the target's
live syncing members, publishes a :class:`Plan` on ``<prefix>/sync/plan``; the others wait
for it (:meth:`PlanBook.take`). The choice needs no election: every node derives it from
the same retained availability and info, so after a broker restart they converge as those
come back. Should two plans for one key still meet (a node that had not yet seen a lower
one come online), every node keeps the one from the lowest leader (:meth:`PlanBook.add`).

Pure: no I/O. Times here are seconds on the group clock (``start``, ``at``) or
``time.monotonic()`` seconds (``arrived``), as each name says.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from edgespeak.base.announcement import PRIORITY_RANK, Priority

PlanSource = Literal["cache", "stream", "fallback"]
STOP_KEY = "stop"  # the key of a group stop message: {"key": "stop", "at": group_t, ...}
PLAN_KEEP_S = 60.0  # a plan nobody used is forgotten after this many seconds
CONFLICT_S = 5.0  # two leaders' plans for one key this close are one announcement


def group_key(ann_id: str, id_given: bool, topic: str, payload: bytes) -> str:
    """The key naming one group announcement on every node: the payload's ``id`` when it
    gave one, else the first 16 hex digits of sha256(topic UTF-8 + payload bytes)."""
    if id_given:
        return ann_id
    return hashlib.sha256(topic.encode() + payload).hexdigest()[:16]


def choose_leader(members: Iterable[str]) -> str | None:
    """The leader among ``members`` (node ids of the live syncing members of a target): the
    lowest in string order, or None when there is none."""
    return min(members, default=None)


@dataclass(frozen=True)
class Plan:
    """One announcement's plan, as the leader publishes it (JSON, §16.3).

    ``start``: group-clock seconds at which every node's first frame is heard.
    ``source``: where the leader's audio came from (``cache``: followers with ``cache_key``
    play from disk; ``stream``: everyone plays the relay and caches it; ``fallback``: the
    offline fallback's audio, relayed, never cached). ``rate_hz``: the audio's sample
    rate, Hz. ``target``: ``all`` or the group's name. ``priority``: the announcement's.
    """

    key: str
    leader: str
    target: str
    start: float
    source: PlanSource
    cache_key: str
    rate_hz: int
    priority: Priority = "normal"

    def to_json(self) -> bytes:
        """The plan as compact UTF-8 JSON."""
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, payload: bytes) -> Plan:
        """Parse a plan message. Raises ValueError naming what is wrong."""
        obj = _object(payload)
        for name in ("key", "leader", "target", "cache_key"):
            if not isinstance(obj.get(name), str) or not obj[name]:
                raise ValueError(f"plan field {name!r} must be a non-empty string")
        start, rate = obj.get("start"), obj.get("rate_hz")
        if not isinstance(start, int | float) or not _finite(start):
            raise ValueError("plan field 'start' must be a finite number")
        if not isinstance(rate, int) or isinstance(rate, bool) or not 1 <= rate <= 384000:
            raise ValueError("plan field 'rate_hz' must be an integer 1..384000")
        source: PlanSource
        priority = obj.get("priority", "normal")
        match obj.get("source"):
            case "cache" | "stream" | "fallback" as source:
                pass
            case _:
                raise ValueError(f"plan field 'source' must be one of {get_args(PlanSource)}")
        if priority not in PRIORITY_RANK:
            raise ValueError(f"plan field 'priority' must be one of {tuple(PRIORITY_RANK)}")
        return cls(
            obj["key"], obj["leader"], obj["target"], float(start), source, obj["cache_key"],
            rate, priority,
        )  # fmt: skip


@dataclass(frozen=True)
class StopAt:
    """A group stop (§16.5): every member of ``target`` cuts what it plays at ``at``
    (group-clock seconds), its fade ending then. Sent by ``leader``."""

    leader: str
    target: str
    at: float

    def to_json(self) -> bytes:
        """The stop as compact UTF-8 JSON (``key`` is ``"stop"``)."""
        body = {"key": STOP_KEY, "leader": self.leader, "target": self.target, "at": self.at}
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> StopAt:
        """From a decoded stop message. Raises ValueError naming what is wrong."""
        if not isinstance(obj.get("leader"), str) or not isinstance(obj.get("target"), str):
            raise ValueError("stop fields 'leader' and 'target' must be strings")
        if not _finite(obj.get("at")):
            raise ValueError("stop field 'at' must be a finite number")
        return cls(obj["leader"], obj["target"], float(obj["at"]))


def parse_sync_message(payload: bytes) -> Plan | StopAt:
    """A message of ``<prefix>/sync/plan``: a :class:`Plan`, or a :class:`StopAt` when its
    ``key`` is ``"stop"``. Raises ValueError naming what is wrong."""
    obj = _object(payload)
    if obj.get("key") == STOP_KEY:
        return StopAt.from_obj(obj)
    return Plan.from_json(payload)


@dataclass
class Received:
    """A plan as this node received it: ``arrived`` is ``time.monotonic()`` seconds."""

    plan: Plan
    arrived: float
    used: bool = False


class PlanBook:
    """The plans received, by key, for the followers waiting on them (:meth:`take`,
    :meth:`changed`).

    One announcement sent twice without an ``id`` has the same key both times: a plan is
    therefore used once (:meth:`take`), and forgotten after ``PLAN_KEEP_S`` seconds unused.
    """

    def __init__(self) -> None:
        self._plans: dict[str, Received] = {}
        self._changed = asyncio.Event()
        self.version = 0  # bumped at every add and wake

    def add(self, plan: Plan, arrived: float) -> Plan:
        """Record ``plan`` (received at ``arrived``, monotonic seconds); returns the plan that
        stands for its key. A copy of the standing plan (a QoS 1 redelivery) changes nothing.
        Two leaders' plans for a key within ``CONFLICT_S`` of each other are one announcement
        planned twice: the lower leader's stands (every node keeps the same one). Otherwise the
        newer plan is the next announcement with that key and replaces the older."""
        self._forget(arrived)
        held = self._plans.get(plan.key)
        if held is not None and held.plan == plan:
            return held.plan
        if (
            held is not None
            and not held.used
            and held.plan.leader < plan.leader
            and arrived - held.arrived <= CONFLICT_S
        ):
            return held.plan
        self._plans[plan.key] = Received(plan, arrived)
        self.wake()
        return plan

    def peek(self, key: str) -> Plan | None:
        """The unused plan standing for ``key``, if any."""
        held = self._plans.get(key)
        return held.plan if held is not None and not held.used else None

    def take(self, key: str, not_before: float = -math.inf) -> Received | None:
        """The unused plan for ``key`` that arrived at ``not_before`` (monotonic seconds) or
        later, marked used; None if there is none."""
        held = self._plans.get(key)
        if held is None or held.used or held.arrived < not_before:
            return None
        held.used = True
        return held

    def wake(self) -> None:
        """Wake every :meth:`changed` waiter (a plan came, or the members changed)."""
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, since: int, timeout_s: float) -> None:
        """Return once :attr:`version` differs from ``since`` (at once if it already does:
        a plan came, or :meth:`wake`), or after ``timeout_s`` seconds."""
        if self.version != since:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._changed.wait()

    def _forget(self, now: float) -> None:
        old = [k for k, held in self._plans.items() if now - held.arrived > PLAN_KEEP_S]
        for key in old:
            del self._plans[key]


def _object(payload: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
