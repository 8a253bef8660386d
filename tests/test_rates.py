"""``[limits] rate`` without the ``limits`` library: its notation parsed the same way, and the
moving window per topic."""

from __future__ import annotations

import limits
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgespeak.config.rates import Rate, parse_rates
from edgespeak.inlets.rate_limit import TopicRateLimit

UNITS = ["second", "minute", "hour", "day", "month", "year", "week", "s", "sec"]
SPACE = st.sampled_from(["", " ", "  ", "\t"])
WORD = st.sampled_from(UNITS).flatmap(
    lambda u: st.sampled_from([u, u + "s", u.upper(), u.title() + "S", u + "ss"])
)
ONE = st.tuples(
    SPACE, st.integers(0, 1000).map(str), SPACE, st.sampled_from(["/", "per", " per ", "PER", ""]),
    SPACE, st.one_of(st.just(""), st.integers(0, 99).map(str)), SPACE, WORD, SPACE,
).map("".join)  # fmt: skip
SPEC = st.lists(
    st.tuples(ONE, st.sampled_from([";", ",", "|", ":;", " ; ", ";;", ""])), min_size=1, max_size=4
).map(lambda parts: "".join(one + sep for one, sep in parts)[: -len(parts[-1][1]) or None])


def theirs(spec: str) -> list[Rate] | None:
    try:
        items = limits.parse_many(spec)
    except ValueError:
        return None
    return [Rate(item.amount, item.get_expiry()) for item in items]


def ours(spec: str) -> list[Rate] | None:
    try:
        return parse_rates(spec)
    except ValueError:
        return None


@pytest.mark.parametrize(
    "spec",
    ["20/minute", "5/second;60/hour", "10 per 2 hours", "1/Day, 3 PER years | 7/0 seconds",
     "20/minute:;5/second", "20 /  minute ", "", "20", "20/fortnight", "x/minute", "5/s",
     "20/minute;", "-1/minute", "1.5/minute"],
)  # fmt: skip
def test_the_notation_is_read_as_the_limits_library_reads_it(spec: str) -> None:
    assert ours(spec) == theirs(spec)


@settings(max_examples=500, deadline=None)
@given(st.one_of(SPEC, st.text(max_size=30)))
def test_any_spec_is_read_as_the_limits_library_reads_it(spec: str) -> None:
    assert ours(spec) == theirs(spec)


def test_the_window_moves_per_topic() -> None:
    now = [1000.0]
    limit = TopicRateLimit("2/minute;3/hour", clock=lambda: now[0])
    assert [limit.allow("a") for _ in range(3)] == [True, True, False]
    now[0] += 59.9
    assert not limit.allow("a"), "both inputs are still within the minute"
    now[0] += 0.2
    assert limit.allow("a"), "the first two left the minute: the third of the hour"
    assert not limit.allow("a"), "the hour is full (refused inputs did not count)"
    assert limit.allow("b") and limit.allow("b"), "another topic has its own windows"
    now[0] += 3600
    assert limit.allow("a")
