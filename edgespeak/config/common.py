"""What every config section shares: the pydantic base, value types, the node id rule."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
)

from edgespeak.base.announcement import Latency

AudioFormat = Literal["pcm", "wav", "opus"]
__all__ = ["AudioFormat", "Latency", "Section", "sanitise_node_id"]


def sanitise_node_id(name: str) -> str:
    """Turn a host name into an MQTT-topic- and Home-Assistant-safe id: ``[a-z0-9_-]+``."""
    cleaned = re.sub(r"[^a-z0-9_-]+", "_", name.strip().lower()).strip("_")
    return cleaned or "edgespeak"


class Section(BaseModel):
    """A config section: unknown keys refused, frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
