"""Input limits end to end: oversize, control-character and flooding inputs get their own
``failed`` reasons from a real daemon, and the normal announcements around them still play."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from edgespeak.inlets import rate_limit
from edgespeak.inlets.rate_limit import TopicRateLimit
from tests.conftest import Stack

LIMITS = '\n[limits]\nmax_payload_bytes = 1024\nmax_text_chars = 60\nrate = "5/minute"\n'


def test_rate_limit_counts_per_topic_and_refuses_past_every_limit() -> None:
    limit = TopicRateLimit("3/minute;4/hour")
    assert [limit.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limit.allow("b"), "another topic has its own allowance"
    assert limit.refusal("a") == "rate limit: more than 3/minute;4/hour on a ([limits] rate)"
    tight = TopicRateLimit("10/minute;2/hour")
    assert [tight.allow("t") for _ in range(3)] == [True, True, False]


def test_rate_limit_starts_no_thread_per_announcement() -> None:
    """limits' MemoryStorage started a timer thread on a hit once its last one had run out:
    a thread per announcement, on the event loop, on the way to the speaker (issue 17)."""
    limit = TopicRateLimit("20/minute")
    library_storage: Any = limit._limiter.storage
    library_storage.timer.join()  # the one the library starts when the storage is made
    before = set(threading.enumerate())
    assert limit.allow("edgespeak/all/announce")
    assert limit.allow("edgespeak/kitchen/announce")
    assert set(threading.enumerate()) == before


def test_rate_limit_drops_expired_entries_when_it_counts() -> None:
    limit = TopicRateLimit("3/second")
    assert [limit.allow("a") for _ in range(4)] == [True, True, True, False]
    (key,) = limit._storage.events
    time.sleep(1.05)  # the clock must move past the window: the entries expire
    limit._expired_at -= rate_limit.EXPIRE_EVERY_S  # the expiry is due
    assert limit.allow("a"), "the window has moved on"
    assert len(limit._storage.events[key]) == 1, "the three expired entries were dropped"


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
