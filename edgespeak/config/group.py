"""``[group]``: playing one announcement on several nodes in step (issue 16).

The nodes share a clock estimated over MQTT (docs/protocols.md §15); ``test_clock_*`` skew this
node's clock so tests can prove the sync holds without NTP.
"""

from __future__ import annotations

from pydantic import Field

from edgespeak.config.common import Section


class GroupConfig(Section):
    """Group playback and the group clock.

    ``sync``: this node takes part (plays ``all`` and group announcements at the group's
    instant and answers/uses the group clock); false opts this node out (it plays as before).
    ``margin_hit_ms``: milliseconds between the plan and the start when the leader has the
    phrase cached. ``margin_stream_ms``: milliseconds added after the leader's first PCM of a
    fresh synthesis (relay, decode, jitter). ``clock_interval_s``: seconds between two clock
    pings once synced (a burst of 8 is sent on (re)connect and on a reference change).
    ``max_clock_error_ms``: the clock counts as synced only while its error bound (ms) is at
    most this (10: the bound is a worst case, half the quickest round trip and more, so a
    node a few ms uncertain still lands far closer to the plan than one that plays at once).
    ``test_clock_offset_s`` (seconds) and ``test_clock_drift_ppm`` (parts per million): TEST
    ONLY, they skew this node's local clock to
    ``monotonic * (1 + drift_ppm / 1e6) + offset_s``; leave them at 0 in production.
    """

    sync: bool = True
    margin_hit_ms: float = Field(120.0, ge=0, le=10_000)
    margin_stream_ms: float = Field(250.0, ge=0, le=10_000)
    clock_interval_s: float = Field(2.0, ge=0.05, le=600)
    max_clock_error_ms: float = Field(10.0, gt=0, le=10_000)
    test_clock_offset_s: float = Field(0.0, ge=-1e6, le=1e6)
    test_clock_drift_ppm: float = Field(0.0, ge=-10_000, le=10_000)
