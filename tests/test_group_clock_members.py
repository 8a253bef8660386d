"""Membership from the retained topics and the ping/pong bookkeeping: pure code.

The exchange itself runs between real daemons in tests/test_group_clock_live.py; here two
:class:`ClockSync` are wired back to back so that every branch (pongs from an earlier
reference, unknown or repeated ones, malformed payloads) is seen with exact times.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from edgespeak.group.clock import GroupClock, LocalClock
from edgespeak.group.members import Members, info_payload, parse_info
from edgespeak.group.sync import ClockSync

SYNC = info_payload((), True)


def members(*nodes: tuple[str, bytes]) -> Members:
    m = Members()
    for node, info in nodes:
        m.availability(node, b"online")
        m.info(node, info)
    return m


def test_the_reference_is_the_lowest_live_node_that_syncs() -> None:
    m = members(("kitchen", SYNC), ("attic", info_payload((), False)), ("bath", SYNC))
    assert m.reference() == "bath"  # attic opted out: it would never answer
    assert m.availability("bath", b"offline") is True
    assert m.reference() == "kitchen"
    assert m.availability("bath", b"offline") is False  # no change
    m.availability("bath", b"online")
    assert m.reference() == "bath" and m.live() == ["attic", "bath", "kitchen"]


def test_a_node_needs_both_availability_and_info() -> None:
    m = Members()
    m.info("a", SYNC)
    assert m.reference() is None  # info left behind by a killed node: not live
    m.availability("b", b"online")
    assert m.reference() is None  # live, but its info has not come (yet)
    m.availability("a", b"online")
    assert m.reference() == "a"
    assert m.info("a", b"") is True  # cleared on an orderly stop
    assert m.reference() is None


def test_members_of_all_and_of_a_group() -> None:
    m = members(
        ("a", info_payload(("house", "up"), True)),
        ("b", info_payload(("house",), True)),
        ("c", info_payload(("house",), False)),
        ("d", SYNC),
    )
    assert m.members_of("all") == ["a", "b", "d"]
    assert m.members_of("house") == ["a", "b"]
    assert m.members_of("up") == ["a"]
    assert m.members_of("cellar") == []


def test_malformed_info_counts_as_none() -> None:
    assert parse_info(b"not json") is None
    assert parse_info(b"[1, 2]") is None
    assert parse_info(b'{"groups": ["x"], "sync": "yes"}') == parse_info(
        info_payload(("x",), False)
    )


class Wire:
    """Two nodes' ClockSync back to back; messages held until :meth:`deliver`, every one
    stamped with the shared fake monotonic clock ``now``."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.held: list[tuple[str, Callable[[], bytes]]] = []
        self.syncs: dict[str, ClockSync] = {}

    def node(self, node_id: str, offset_s: float) -> ClockSync:
        local = LocalClock(offset_s, 0.0, source=lambda: self.now)
        clock = GroupClock(node_id, local, interval_s=2.0, max_error_s=0.002)
        sync = ClockSync(clock, "es", lambda topic, build: self.held.append((topic, build)))
        self.syncs[node_id] = sync
        return sync

    def deliver(self, one_way_s: float = 0.001) -> list[bytes]:
        """Publish every held message (build now), deliver it ``one_way_s`` later."""
        sent = []
        held, self.held = self.held, []
        for topic, build in held:
            payload = build()
            sent.append(payload)
            self.now += one_way_s
            _, node, _, kind = topic.split("/")
            sync = self.syncs[node]
            (sync.on_ping if kind == "ping" else sync.on_pong)(payload, self.now)
        return sent


def test_a_ping_and_its_pong_give_the_exact_offset() -> None:
    wire = Wire()
    a, b = wire.node("a", 0.0), wire.node("b", 3.7)
    for sync in (a, b):
        sync.follow("a")
    b.ping()
    assert wire.held[0][0] == "es/a/clock/ping"
    ping = json.loads(wire.deliver()[0])
    assert ping == {"from": "b", "seq": 0, "t1": 1003.7}
    pong = json.loads(wire.deliver()[0])
    assert pong == {"seq": 0, "t1": 1003.7, "t2": 1000.001, "t3": 1000.001}
    status = b.status()
    assert status["synced"] and status["samples"] == 1
    assert abs(status["group_s"] - wire.now) < 1e-9  # a's clock is the monotonic one
    assert status["error_ms"] == 1.0005  # δ/2 = 1 ms, + 500 ppm x the 1 ms since


def test_only_the_reference_answers_and_old_or_unknown_pongs_are_dropped() -> None:
    wire = Wire()
    a, b, c = wire.node("a", 0.0), wire.node("b", 5.0), wire.node("c", 0.0)
    for sync in (a, b, c):
        sync.follow("a")
    b.ping()
    b.follow("c")  # the reference changes while the ping is on its way
    wire.deliver()
    wire.deliver()  # a answers: a pong to a ping made for an earlier reference
    assert b.clock.sample_count == 0
    c.held = []
    b.on_pong(b'{"seq": 99, "t2": 1, "t3": 1}', wire.now)  # never sent
    b.on_pong(b'{"seq": "x"}', wire.now)
    b.on_pong(b"garbage", wire.now)
    c.on_ping(b'{"from": "b", "seq": 1, "t1": "NaN"}', wire.now)  # c is not the reference
    assert b.clock.sample_count == 0 and wire.held == []
    assert b.status()["reason"] == "no clock sample from the reference c yet"
