"""Rate limits written in the ``limits`` library's notation: ``"20/minute"``, ``"5 per second"``,
``"10/2 hours"``, several joined by ``;``, ``,`` or ``|`` (``"5/second;60/hour"``).

The notation, parsed as ``limits.parse_many`` does (its regular expressions, copied, quirks
included; ``tests/test_rates.py`` checks the two agree), without importing that library: with
its storage back-ends for Redis, MongoDB and memcached it cost the daemon ~1.3 MiB of RSS and
55 modules for a counter. Granularities: second, minute, hour, day, month (30 days), year (360
days), singular or plural, any case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SEPARATORS = re.compile(r"[,;|]{1}")
_SINGLE = re.compile(
    r"""
    \s*([0-9]+)
    \s*(/|\s*per\s*)
    \s*([0-9]+)?
    \s*([a-z]+)
    \s*
    """,
    re.IGNORECASE | re.VERBOSE,
)
_WHOLE = re.compile(
    rf"^{_SINGLE.pattern}(:?{_SEPARATORS.pattern}{_SINGLE.pattern})*$",
    re.IGNORECASE | re.VERBOSE,
)
_DAY_S = 24 * 60 * 60
GRANULARITY_S = {
    "second": 1,
    "minute": 60,
    "hour": 60 * 60,
    "day": _DAY_S,
    "month": 30 * _DAY_S,
    "year": 12 * 30 * _DAY_S,
}


@dataclass(frozen=True)
class Rate:
    """At most ``amount`` events in any ``window_s`` seconds."""

    amount: int
    window_s: int


def parse_rates(spec: str) -> list[Rate]:
    """The rates ``spec`` lists, in order. Raises ValueError when it is not the notation."""
    if not _WHOLE.match(spec):
        raise ValueError(f"couldn't parse rate limit string '{spec}'")
    rates = []
    for part in _SEPARATORS.split(spec):
        if match := _SINGLE.match(part):
            amount, _, multiples, granularity = match.groups()
            seconds = GRANULARITY_S.get(granularity.lower().removesuffix("s"))  # plural too
            if seconds is None:
                raise ValueError(f"no granularity matched for {granularity}")
            rates.append(Rate(int(amount), seconds * (int(multiples or 0) or 1)))
    return rates
