"""The ``[limits] rate`` notation: how many announcements a topic may carry per period.

``"20/minute"``, ``"20 per minute"``, ``"5/second;60/hour"`` (several limits, all of which must
allow; ``;``, ``,`` or ``|`` between them), ``"10/2 minutes"`` (a period of several units). The
units are second, minute, hour, day, month (30 days) and year (360 days), singular or plural.
This is the notation of the ``limits`` library, which edgespeak used before (issue 17), so
configs written for it keep their meaning; its grammar is documented at
https://limits.readthedocs.io/en/stable/quickstart.html#rate-limit-string-notation.
"""

from __future__ import annotations

import re
from typing import NamedTuple

UNIT_S = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "month": 30 * 86400,
    "year": 360 * 86400,
}
_ONE = re.compile(
    r"\s*(\d+)\s*(?:/|per)\s*(\d+)?\s*(second|minute|hour|day|month|year)s?\s*", re.IGNORECASE
)
_BETWEEN = re.compile(r"[;,|]")


class Rate(NamedTuple):
    """At most ``amount`` announcements per ``period_s`` seconds."""

    amount: int
    period_s: float


def parse_rates(spec: str) -> list[Rate]:
    """The limits written in ``spec`` (see the module docstring), in order. Raises ValueError
    for an empty spec, a part that is not one limit, a count of 0 or a period of 0 units."""
    rates: list[Rate] = []
    for part in _BETWEEN.split(spec):
        match = _ONE.fullmatch(part)
        if match is None:
            raise ValueError(f"{part.strip()!r} is not a rate")
        count, units, unit = match.groups()
        period_s = int(units or 1) * UNIT_S[unit.lower()]
        if int(count) < 1 or period_s == 0:
            raise ValueError(f"{part.strip()!r} allows nothing")
        rates.append(Rate(int(count), float(period_s)))
    return rates
