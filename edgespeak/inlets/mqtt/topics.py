"""The MQTT topics of one node: ``<prefix>/<node_id>/…``, ``<prefix>/all/…`` and
``<prefix>/group/<name>/…``, built from the settings in one place
(:meth:`Topics.from_settings`)."""

from __future__ import annotations

from dataclasses import dataclass

from edgespeak.config import Settings


@dataclass(frozen=True)
class Topics:
    """The topics of one node: its own, ``all``'s and those of its ``groups``."""

    prefix: str
    node_id: str
    groups: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        """The topics of the node ``settings`` configure: ``[mqtt] prefix``, ``node_id`` and
        ``[mqtt] groups``. Every user of the node's topics builds them here."""
        return cls(settings.mqtt.prefix, settings.node_id, settings.mqtt.groups)

    @property
    def _targets(self) -> list[str]:
        """The topic stems this node answers to."""
        stems = [f"{self.prefix}/{self.node_id}", f"{self.prefix}/all"]
        return stems + [f"{self.prefix}/group/{group}" for group in self.groups]

    @property
    def announce(self) -> list[str]:
        """Announce payloads (plain text or JSON), QoS 1."""
        return [f"{stem}/announce" for stem in self._targets]

    @property
    def stop(self) -> list[str]:
        """Stop the playing announcement and clear the queue (payload ignored)."""
        return [f"{stem}/stop" for stem in self._targets]

    @property
    def chime(self) -> str:
        """Play a chime (payload: a sound name; empty = ``[sounds] default_chime``)."""
        return f"{self.prefix}/{self.node_id}/chime"

    @property
    def volume_set(self) -> str:
        """Set the volume: payload a number 0-100 (percent); persisted across restarts."""
        return f"{self.prefix}/{self.node_id}/volume/set"

    @property
    def state(self) -> str:
        """Retained JSON state: speaking/idle, volume, queue length, cache entries, provider."""
        return f"{self.prefix}/{self.node_id}/state"

    @property
    def event(self) -> str:
        """Announcement events, one JSON object per state change (base/events.py)."""
        return f"{self.prefix}/{self.node_id}/event"

    @property
    def availability(self) -> str:
        """``online`` (retained) while the daemon is connected, ``offline`` otherwise (also its
        MQTT will)."""
        return f"{self.prefix}/{self.node_id}/availability"
