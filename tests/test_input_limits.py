"""Input limits end to end: oversize, control-character and flooding inputs get their own
``failed`` reasons from a real daemon, and the normal announcements around them still play."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import token_bucket.storage

from edgespeak.base.errors import ConfigError
from edgespeak.config import load_config
from edgespeak.config.rates import Rate, parse_rates
from edgespeak.inlets.rate_limit import TopicRateLimit
from tests.conftest import Stack

LIMITS = '\n[limits]\nmax_payload_bytes = 1024\nmax_text_chars = 60\nrate = "5/minute"\n'


class _Clock:
    """A monotonic clock the test moves: ``token_bucket``'s storage reads ``time.monotonic``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(token_bucket.storage, "time", fake)
    return fake


def test_rate_limit_counts_per_topic_and_refuses_past_every_limit(clock: _Clock) -> None:
    limit = TopicRateLimit("3/minute;4/hour")
    assert [limit.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limit.allow("b"), "another topic has its own allowance"
    assert limit.refusal("a") == "rate limit: more than 3/minute;4/hour on a ([limits] rate)"
    tight = TopicRateLimit("10/minute;2/hour")
    assert [tight.allow("t") for _ in range(3)] == [True, True, False]


def test_rate_limit_refills_at_its_rate_and_a_refusal_costs_nothing(clock: _Clock) -> None:
    limit = TopicRateLimit("2/second;3/hour")
    assert [limit.allow("a") for _ in range(3)] == [True, True, False]
    clock.now += 0.4  # 0.8 of a token back in the 2/second bucket
    assert not limit.allow("a")
    clock.now += 0.1
    assert limit.allow("a"), "a token is back after half a second"
    clock.now += 1.0
    assert not limit.allow("a"), "3/hour is spent: the refused inputs took none of it"
    clock.now += 1200.0
    assert limit.allow("a"), "an hour's bucket gives a token back every 20 minutes"


def test_rate_limit_lets_a_full_burst_through_after_a_quiet_period(clock: _Clock) -> None:
    limit = TopicRateLimit("5/minute")
    assert sum(limit.allow("a") for _ in range(10)) == 5
    clock.now += 30.0
    assert sum(limit.allow("a") for _ in range(10)) == 2, "2.5 tokens back after half a minute"
    clock.now += 3600.0
    assert sum(limit.allow("a") for _ in range(10)) == 5, "refilled to the limit, not past it"


def test_rate_limit_starts_no_thread_per_announcement() -> None:
    """The ``limits`` library used before started a timer thread on nearly every hit, on the
    event loop, on the way to the speaker (issue 17)."""
    limit = TopicRateLimit("20/minute")
    before = set(threading.enumerate())
    assert limit.allow("edgespeak/all/announce")
    assert limit.allow("edgespeak/kitchen/announce")
    assert set(threading.enumerate()) == before


@pytest.mark.parametrize(
    ("spec", "rates"),
    [
        ("20/minute", [(20, 60)]),
        ("20 per minute", [(20, 60)]),
        ("3 PER HOUR", [(3, 3600)]),
        ("5/second;60/hour", [(5, 1), (60, 3600)]),
        ("1/day,2/month|3/year", [(1, 86400), (2, 30 * 86400), (3, 360 * 86400)]),
        (" 10 / 2 minutes ", [(10, 120)]),
    ],
)
def test_rate_notation_is_the_one_configs_were_written_in(
    spec: str, rates: list[tuple[int, int]]
) -> None:
    assert parse_rates(spec) == [Rate(n, float(s)) for n, s in rates]


@pytest.mark.parametrize(
    "spec", ["", "20", "x/minute", "20/fortnight", "20/minute;", "0/minute", "5/0 minutes"]
)
def test_a_rate_that_is_not_one_is_refused_by_the_config(tmp_path: Path, spec: str) -> None:
    with pytest.raises(ValueError, match=r"is not a rate|allows nothing"):
        parse_rates(spec)
    config = tmp_path / "config.toml"
    config.write_text(f'[limits]\nrate = "{spec}"\n')
    with pytest.raises(ConfigError, match=r"is not a rate; write e\.g\. \"20/minute\""):
        load_config(config)


async def test_oversize_control_character_and_flood_inputs_fail_and_the_rest_plays(
    stack: Stack,
) -> None:
    config = stack.config()
    config.write_text(config.read_text() + LIMITS)
    async with stack.daemon(config) as w:
        await w.announce(json.dumps({"id": "big-1", "text": "a" * 1100}))
        oversize = await w.wait("failed")  # not parsed at all, so its id is not known
        await w.announce(json.dumps({"id": "long-1", "text": "word " * 13}))
        too_long = await w.wait("failed", ann_id="long-1")
        await w.announce(json.dumps({"id": "ctl-1", "text": "\u0007\u001b\u0000"}))
        only_controls = await w.wait("failed", ann_id="ctl-1")
        cleaned = await w.say("Door\u0007bell\u001b at the\nfront.", "ctl-2")
        # A flood on another topic: the first five pass, the rest are refused at once.
        for n in range(1, 8):
            body = json.dumps({"id": f"flood-{n}", "text": "Hi."})
            await w.client.publish("edgespeak/all/announce", body, qos=1)
        refused = [await w.wait("failed", ann_id=f"flood-{n}") for n in (6, 7)]
        flooded = [await w.wait("finished", "failed", ann_id=f"flood-{n}") for n in range(1, 6)]
        good = await w.say("The washing is done.", "good-1")
    assert (
        oversize["error"] == "payload is 1127 bytes; the limit is 1024 ([limits] max_payload_bytes)"
    )
    assert too_long["error"] == "text is 64 characters; the limit is 60 ([limits] max_text_chars)"
    assert only_controls["error"] == "text is empty after removing control characters"
    assert cleaned["state"] == "finished"
    for event in refused:
        assert event["error"] == (
            "rate limit: more than 5/minute on edgespeak/all/announce ([limits] rate)"
        )
    assert [e["state"] for e in flooded] == ["finished"] * 5
    assert good["state"] == "finished", "the node's own topic is not limited by the flood"
    # Exactly the accepted announcements reached ALSA, the cleaned text as the server spoke it.
    expected = await stack.sent("Doorbell at the front.")
    expected += (await stack.sent("Hi.")) * 5 + await stack.sent("The washing is done.")
    assert stack.capture.read() == expected
    log = stack.daemon_log.read_text()
    assert log.count("rate limit: more than 5/minute on edgespeak/all/announce") == 1


DEEP = b"[" * 10_000  # within the 16 KiB payload limit, past the JSON decoder's recursion limit
LONG_INT = b"1" * 5000  # past Python's 4300-digit limit on int() of a string


async def test_json_the_decoder_cannot_take_fails_with_an_event_on_every_inlet(
    stack: Stack,
) -> None:
    """Announce and Hermes say payloads that make the JSON decoder raise something other than
    a decode error (RecursionError, ValueError) each end in a ``failed`` event saying why,
    not in an "internal error" log line with no event; the next announcement still plays."""
    config = stack.config()
    config.write_text(config.read_text() + '[hermes]\nenabled = true\nsite_id = "kitchen"\n')
    async with stack.daemon(config) as w:
        failed = []
        for topic, payload in [
            ("edgespeak/testnode/announce", DEEP),
            ("edgespeak/testnode/announce", b'{"id": "n-1", "text": "Hi", "n": ' + LONG_INT + b"}"),
            ("hermes/tts/say", b'{"text": "Hi", "siteId": "kitchen", "x": ' + DEEP + b"}"),
            ("hermes/tts/say", b'{"text": "Hi", "siteId": "kitchen", "n": ' + LONG_INT + b"}"),
        ]:
            after = len(w.events)
            await w.client.publish(topic, payload, qos=1)
            failed.append(await w.wait("failed", after=after, timeout_s=10))
        good = await w.say("The washing is done.", "good-1")
    deep = "JSON is nested too deeply to decode"
    digits = "JSON cannot be decoded: Exceeds the limit"
    assert [e["error"][: len(deep)] for e in failed[::2]] == [deep, deep]
    assert [e["error"][: len(digits)] for e in failed[1::2]] == [digits, digits]
    assert good["state"] == "finished"
    assert "internal error" not in stack.daemon_log.read_text()


async def test_lone_surrogate_escapes_fail_clearly_and_the_daemon_stays_up(stack: Stack) -> None:
    """JSON escapes of half a surrogate pair passed the parsers: the text one failed later as
    an "internal error", and a Hermes sessionId one made the sayFinished reply raise (an
    ``interrupted`` one crashed the scheduler, taking the daemon down). Both are refused
    naming the field, and the daemon speaks on."""
    config = stack.config()
    config.write_text(config.read_text() + '[hermes]\nenabled = true\nsite_id = "kitchen"\n')
    async with stack.daemon(config) as w:
        say = {"text": "Hi.", "siteId": "kitchen", "id": "h-1", "sessionId": "\ud800"}
        await w.client.publish("hermes/tts/say", json.dumps(say), qos=1)
        hermes = await w.wait("finished", "failed", ann_id="h-1")
        await w.announce(json.dumps({"text": "Hi \ud800 there.", "id": "s-1"}))
        text = await w.wait("finished", "failed", ann_id="s-1")
        good = await w.say("The washing is done.", "good-1")
    assert w.states("h-1") == ["failed"]
    assert hermes["error"] == "field 'sessionId' is not valid Unicode: a lone surrogate " + (
        "(\\ud800 at character 1)"
    )
    assert w.states("s-1") == ["failed"]
    assert text["error"].startswith("text is not valid Unicode: a lone surrogate")
    assert good["state"] == "finished"
    assert "internal error" not in stack.daemon_log.read_text()
