"""Who is in the group: live nodes, the groups each is in, and the clock reference.

Fed from two retained topics of every node under the prefix (docs/protocols.md §15):
``<prefix>/<node>/availability`` (``online``/``offline``, the daemon's MQTT will) and
``<prefix>/<node>/info``, JSON ``{"groups": [names], "sync": bool}`` (published on connect,
cleared with an empty retained message on an orderly stop). A node is **live** while its
availability reads ``online``; it **syncs** when its info says ``"sync": true``. Pure code: the
MQTT side is :mod:`edgespeak.inlets.mqtt.group`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)
ALL = "all"  # the target every syncing node belongs to


@dataclass(frozen=True)
class Info:
    """A node's retained info: the ``groups`` it is in, and whether it takes part (``sync``)."""

    groups: tuple[str, ...]
    sync: bool


def info_payload(groups: tuple[str, ...], sync: bool) -> bytes:
    """The retained ``info`` payload of a node in ``groups`` (``[group] sync`` = ``sync``)."""
    return json.dumps({"groups": list(groups), "sync": sync}, separators=(",", ":")).encode()


def parse_info(payload: bytes) -> Info | None:
    """``info`` as published by :func:`info_payload`; None for an empty (cleared) or malformed
    payload (malformed: logged, the node counts as not syncing)."""
    if not payload:
        return None
    try:
        data = json.loads(payload)
        groups = tuple(str(g) for g in data.get("groups", []))
        return Info(groups, data.get("sync") is True)
    except (ValueError, AttributeError, TypeError):
        log.warning("ignoring a malformed group info: %r", payload[:100])
        return None


class Members:
    """The live nodes and their info as last seen on the retained topics."""

    def __init__(self) -> None:
        self._online: set[str] = set()
        self._info: dict[str, Info] = {}

    def clear(self) -> None:
        """Forget everything (a new subscription is about to bring the retained state)."""
        self._online.clear()
        self._info.clear()

    def availability(self, node: str, payload: bytes) -> bool:
        """Note ``node``'s availability payload (``online`` or anything else: offline).
        Returns True when the set of live nodes changed."""
        before = node in self._online
        if payload.strip() == b"online":
            self._online.add(node)
        else:
            self._online.discard(node)
        return before != (node in self._online)

    def info(self, node: str, payload: bytes) -> bool:
        """Note ``node``'s info payload (empty: cleared). Returns True when it changed."""
        parsed = parse_info(payload)
        before = self._info.get(node)
        if parsed is None:
            self._info.pop(node, None)
        else:
            self._info[node] = parsed
        return before != parsed

    def live(self) -> list[str]:
        """Live nodes, in node id order."""
        return sorted(self._online)

    def syncing(self) -> list[str]:
        """Live nodes whose info says they sync, in node id order: the members of ``all``."""
        return [n for n in self.live() if (i := self._info.get(n)) is not None and i.sync]

    def members_of(self, target: str) -> list[str]:
        """The members of ``target`` in node id order: ``all`` = :meth:`syncing`; a group name
        = the live, syncing nodes whose info lists it."""
        if target == ALL:
            return self.syncing()
        return [n for n in self.syncing() if target in self._info[n].groups]

    def reference(self) -> str | None:
        """The clock reference: the lowest node id among the live, syncing nodes (None: none).
        Every node computes it from the same retained messages, so they agree without an
        election (for as long as their views of the retained state agree)."""
        syncing = self.syncing()
        return syncing[0] if syncing else None
