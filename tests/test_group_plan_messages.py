"""Plan messages, the group key, the leader choice and the plan book (group/plan.py), and which
announcements are group ones (inlets/mqtt/group_plan.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from edgespeak.base.errors import PayloadError
from edgespeak.config import Settings
from edgespeak.group.node import topic_key
from edgespeak.group.plan import (
    Plan,
    PlanBook,
    StopAt,
    choose_leader,
    group_key,
    parse_sync_message,
)
from edgespeak.inlets.mqtt.group_plan import group_target, mark_group
from edgespeak.inlets.mqtt.link import Incoming
from edgespeak.inlets.payload import parse_payload

PLAN = Plan("door-1", "alpha", "all", 1234.5, "stream", "ab" * 32, 22050, "high")


def test_a_plan_goes_through_json_unchanged() -> None:
    assert parse_sync_message(PLAN.to_json()) == PLAN
    assert json.loads(PLAN.to_json())["start"] == 1234.5


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"start": "soon"}, "'start' must be a finite number"),
        ({"start": True}, "'start' must be a finite number"),
        ({"source": "disk"}, "'source' must be one of"),
        ({"leader": ""}, "'leader' must be a non-empty string"),
        ({"rate_hz": 0}, "'rate_hz' must be an integer"),
        ({"priority": "urgent"}, "'priority' must be one of"),
    ],
)
def test_a_bad_plan_is_refused_naming_the_field(change: dict[str, object], error: str) -> None:
    body = json.loads(PLAN.to_json()) | change
    with pytest.raises(ValueError, match=error):
        parse_sync_message(json.dumps(body).encode())


def test_a_stop_is_told_apart_from_a_plan() -> None:
    stop = StopAt("alpha", "kitchen", 99.25)
    assert parse_sync_message(stop.to_json()) == stop
    with pytest.raises(ValueError, match="not JSON"):
        parse_sync_message(b"\xff")


def test_the_key_is_the_id_else_a_hash_of_topic_and_payload() -> None:
    assert group_key("door-1", True, "edgespeak/all/announce", b"x") == "door-1"
    a = group_key("r1", False, "edgespeak/all/announce", b"Dinner")
    b = group_key("r2", False, "edgespeak/all/announce", b"Dinner")
    c = group_key("r1", False, "edgespeak/group/up/announce", b"Dinner")
    assert a == b != c and len(a) == 16
    assert topic_key("door-1") == "door-1"
    assert topic_key("a/b+#") != "a/b+#" and "/" not in topic_key("a/b+#")


def test_the_leader_is_the_lowest_member() -> None:
    assert choose_leader(["charlie", "alpha", "bravo"]) == "alpha"
    assert choose_leader([]) is None


async def test_two_plans_for_one_key_the_lowest_leader_wins() -> None:
    book = PlanBook()
    later = Plan("k", "bravo", "all", 1.0, "cache", "c" * 64, 22050)
    lower = Plan("k", "alpha", "all", 2.0, "cache", "c" * 64, 22050)
    assert book.add(later, 10.0) is later
    assert book.add(lower, 10.1) is lower
    assert book.add(later, 10.2) is lower  # bravo's again: alpha's stands
    got = book.take("k")
    assert got is not None and got.plan is lower
    assert book.take("k") is None  # used once: the same phrase again waits for a new plan


async def test_a_plan_older_than_the_announcement_is_not_taken() -> None:
    book = PlanBook()
    book.add(PLAN, 5.0)
    assert book.take(PLAN.key, not_before=6.0) is None
    waiter = asyncio.create_task(book.changed(book.version, 5.0))
    book.add(PLAN, 7.0)  # a QoS 1 redelivery: nothing new
    assert book.take(PLAN.key, not_before=6.0) is None
    again = dataclasses.replace(PLAN, start=PLAN.start + 30)
    book.add(again, 7.0)  # the same phrase announced again: its plan wakes the waiter
    await asyncio.wait_for(waiter, 1.0)
    got = book.take(PLAN.key, not_before=6.0)
    assert got is not None and got.plan is again


@pytest.mark.parametrize(
    ("topic", "target"),
    [
        ("edgespeak/all/announce", "all"),
        ("edgespeak/group/kitchen/announce", "kitchen"),
        ("edgespeak/alpha/announce", None),
        ("edgespeak/group//announce", None),
        ("other/all/announce", None),
    ],
)
def test_group_topics(topic: str, target: str | None) -> None:
    assert group_target(topic, "edgespeak") == target


@pytest.mark.parametrize(
    ("payload", "group_sync", "grouped"),
    [
        (b'{"text": "hi", "id": "x"}', True, True),
        (b'{"text": "hi", "id": "x", "sync": false}', True, False),
        (b'{"text": "hi", "id": "x"}', False, False),
    ],
)
def test_sync_opts_out_per_message_or_per_node(
    payload: bytes, group_sync: bool, grouped: bool
) -> None:
    settings = Settings.model_validate({"node_id": "alpha", "group": {"sync": group_sync}})
    topic = "edgespeak/all/announce"
    ann = parse_payload(payload, topic=topic)
    marked = mark_group(ann, Incoming(topic, payload, 0.0, None, False), settings)
    assert (marked.group, marked.group_key) == (("all", "x") if grouped else (None, None))


def test_sync_must_be_a_boolean() -> None:
    with pytest.raises(PayloadError, match="field 'sync' must be true or false"):
        parse_payload(b'{"text": "hi", "sync": "no"}')
