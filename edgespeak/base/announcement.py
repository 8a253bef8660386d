"""The announcement: one thing to say (or play), as every inlet hands it to the scheduler.

Inlets build it (:mod:`edgespeak.inlets.payload` parses MQTT payloads, Hermes and the test chime
make their own); the scheduler orders it by :attr:`Announcement.rank`; the speaker speaks it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

Priority = Literal["low", "normal", "high", "critical"]
PRIORITY_RANK: dict[Priority, int] = {"low": 0, "normal": 1, "high": 2, "critical": 3}
Latency = Literal["low", "normal", "balanced"]  # a provider latency mode (Fish's TTSRequest)


@dataclass(frozen=True)
class Announcement:
    """One thing to say.

    ``received_at`` is ``time.monotonic()`` seconds at MQTT receipt: TTFA is measured from it.
    ``id_given``: the payload named the id (duplicates of it are ignored). ``ttl_s`` None = the
    configured default. ``volume`` None = 1.0; ``lead_in_ms`` None = ``[audio] lead_in_ms``.
    ``sound``: audio to play instead of speaking ``text`` (a Hermes ``playBytes`` WAV, the
    test-chime button): bytes of s16le mono PCM at ``sound_rate_hz`` Hz; ``text`` then only
    names it in logs. ``topic``: the MQTT topic it came on (or filter, for Hermes playBytes
    whose last level is a request id); the rate limit counts per topic. ``url``: an http(s)
    media URL to fetch and play instead (Home Assistant's media player); ``text`` then only
    names it in logs, never with the URL's path or query.
    ``sync``: the payload's ``sync`` (False: play on this node alone, not in step with the
    group; None: not given). ``group``: ``all`` or the group's name when it came on a group
    topic and is to be played in step (set by the MQTT inlet, :mod:`edgespeak.group`);
    ``group_key``: the key naming it on every node then.
    """

    text: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    voice: str | None = None
    received_at: float = 0.0
    topic: str = ""
    id_given: bool = False
    priority: Priority = "normal"
    ttl_s: float | None = None
    volume: float | None = None
    chime: str | None = None
    lead_in_ms: int | None = None
    sound: bytes | None = field(default=None, repr=False)
    sound_rate_hz: int = 0
    speed: float | None = None
    volume_db: float | None = None
    latency: Latency | None = None
    url: str | None = field(default=None, repr=False)
    sync: bool | None = None
    group: str | None = None
    group_key: str | None = None

    @property
    def rank(self) -> int:
        """``priority`` as a number: low 0 … critical 3."""
        return PRIORITY_RANK[self.priority]
