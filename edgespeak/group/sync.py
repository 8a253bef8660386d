"""The clock exchange with the group's reference (docs/protocols.md §15).

A node that is not the reference sends ``<prefix>/<ref>/clock/ping``
``{"from": node, "seq": n, "t1": local}``; the reference answers on
``<prefix>/<node>/clock/pong`` ``{"seq": n, "t1": …, "t2": received, "t3": sent}``; the node
notes ``t4`` on receipt and hands the four timestamps to its :class:`GroupClock`. Both are
QoS 0, not retained, JSON; every time is seconds on the stamping node's local clock.

Where the stamps are taken: ``t1`` and ``t3`` by the payload builder that the link calls at
the moment it hands the message to the MQTT client (never before a queue), ``t2`` and ``t4``
from the link's receipt time (``Incoming.received_at``, stamped when the message is
dispatched). What remains unmeasured: one event-loop turn between the hand-over and the socket
write, and between the socket read and the dispatch, on each side. Both count in the round
trip δ, so the minimum-delay filter of :mod:`edgespeak.group.clock` prefers the exchanges where
they were short; only their asymmetry within one exchange can bias θ, by at most δ/2.

Cadence: a burst of :data:`BURST` pings :data:`BURST_GAP_S` apart after a (re)connection and
when the reference changes, then one every ``clock_interval_s``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Callable
from typing import Any

from edgespeak.group.clock import GroupClock, Sample

log = logging.getLogger(__name__)
BURST = 8
BURST_GAP_S = 0.02
MAX_OUTSTANDING = 64  # pings remembered while waiting for their pong

# (topic, build): publish at QoS 0, not retained, calling build() for the payload at the
# instant the message is handed to the MQTT client (see the module docstring).
SendStamped = Callable[[str, Callable[[], bytes]], None]


def _dump(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _number(data: dict[str, Any], key: str) -> float:
    """``data[key]`` as a finite float; ValueError otherwise."""
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key} is not a finite number")
    return float(value)


class ClockSync:
    """Runs this node's side of the exchange for ``clock`` under ``prefix``, sending through
    ``send``. Feed it :meth:`on_ping` / :meth:`on_pong`; tell it the reference with
    :meth:`follow` and a (re)connection with :meth:`reconnected`; :meth:`run` sends the pings."""

    def __init__(self, clock: GroupClock, prefix: str, send: SendStamped) -> None:
        self.clock = clock
        self.prefix = prefix
        self._send = send
        self._seq = 0
        self._epoch = 0  # pongs to pings older than this came from a previous reference
        self._sent: dict[int, float] = {}  # seq -> t1 of the pings sent, awaiting their pong
        self._wake = asyncio.Event()
        self._burst = True
        self._said: tuple[str | None, str | None] | None = None  # (reference, reason kind) logged

    def topic(self, node: str, kind: str) -> str:
        """``<prefix>/<node>/clock/<kind>`` (kind ``ping`` or ``pong``)."""
        return f"{self.prefix}/{node}/clock/{kind}"

    def follow(self, reference: str | None) -> None:
        """Use ``reference`` (None: none live) from now on; a change forgets the samples and
        answers still on their way, and starts a burst."""
        if self.clock.set_reference(reference):
            log.info("group clock reference: %s", reference or "none")
            self._epoch = self._seq
            self._sent.clear()
            self._start_burst()

    def reconnected(self) -> None:
        """The broker link is (again) up: start a burst."""
        self._start_burst()

    def _start_burst(self) -> None:
        self._burst = True
        self._wake.set()

    def on_ping(self, payload: bytes, received_mono: float) -> None:
        """A ping received at ``time.monotonic()`` ``received_mono``; answered only while this
        node is the reference (a ping meant for an earlier reference gets no answer)."""
        if not self.clock.is_reference:
            return
        t2 = self.clock.local.from_monotonic(received_mono)
        try:
            data = json.loads(payload)
            sender, seq, t1 = str(data["from"]), int(data["seq"]), _number(data, "t1")
        except (ValueError, KeyError, TypeError) as exc:
            log.debug("ignoring a malformed clock ping: %s", exc)
            return
        local = self.clock.local

        def pong() -> bytes:
            return _dump({"seq": seq, "t1": t1, "t2": t2, "t3": local.now()})

        self._send(self.topic(sender, "pong"), pong)

    def on_pong(self, payload: bytes, received_mono: float) -> None:
        """A pong received at ``time.monotonic()`` ``received_mono``: one sample for the clock
        when it answers a ping this node sent to the current reference."""
        t4 = self.clock.local.from_monotonic(received_mono)
        try:
            data = json.loads(payload)
            seq, t2, t3 = int(data["seq"]), _number(data, "t2"), _number(data, "t3")
        except (ValueError, KeyError, TypeError) as exc:
            log.debug("ignoring a malformed clock pong: %s", exc)
            return
        t1 = self._sent.pop(seq, None)
        if t1 is None or seq < self._epoch:
            return  # not ours, answered twice, or from an earlier reference
        self.clock.add(Sample(t1, t2, t3, t4))
        self.report()

    def report(self) -> None:
        """Log when the clock becomes synced (INFO), stops being synced, or stays unsynced for
        another kind of reason (WARNING, why: a bound grown too large, then the reference silent,
        are two lines; the figures within one kind do not make new ones)."""
        clock = self.clock
        reason = clock.reason
        said = (clock.reference, None if reason is None else re.sub(r"[-+\d.]+", "#", reason))
        if said == self._said:
            return
        self._said = said
        if clock.is_reference:
            log.info("group clock: this node is the reference")
        elif reason is None:
            log.info(
                "group clock synced to %s: offset %+.6f s, error bound %.3f ms",
                clock.reference, clock.offset_at(clock.local.now()), clock.error_s * 1e3,
            )  # fmt: skip
        else:
            log.warning("group clock not synced: %s", reason)

    def ping(self) -> None:
        """Send one ping to the reference (nothing while this node is it, or none is known)."""
        reference = self.clock.reference
        if reference is None or self.clock.is_reference:
            return
        seq = self._seq
        self._seq += 1
        local = self.clock.local
        node = self.clock.node_id

        def build() -> bytes:
            t1 = local.now()
            self._sent[seq] = t1
            while len(self._sent) > MAX_OUTSTANDING:
                del self._sent[min(self._sent)]
            return _dump({"from": node, "seq": seq, "t1": t1})

        self._send(self.topic(reference, "ping"), build)

    async def run(self) -> None:
        """Send pings until cancelled: a burst when one is due, else one per interval."""
        while True:
            if self._burst:
                self._burst = False
                for _ in range(BURST):
                    self.ping()
                    await asyncio.sleep(BURST_GAP_S)  # the cadence, not a synchronisation
            else:
                self.ping()
            self.report()
            if self._burst:  # asked for during this one: at once
                continue
            self._wake.clear()
            try:
                async with asyncio.timeout(self.clock.interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def status(self) -> dict[str, Any]:
        """This node's clock now, as JSON-ready data: ``node``, ``reference``, ``synced``,
        ``reason`` (None when synced), ``error_ms`` (the bound, None while unknown),
        ``offset_s`` (group minus local), ``drift_ppm``, ``samples`` kept, and one instant
        read three ways: ``monotonic_s`` (this machine's ``time.monotonic()``), ``local_s``
        and ``group_s`` (its estimated group time). On one machine, tests compare
        ``group_s`` with the reference's clock at ``monotonic_s``."""
        clock = self.clock
        mono = clock.local.source()
        local = clock.local.from_monotonic(mono)
        error = clock.error_at(local)
        return {
            "node": clock.node_id,
            "reference": clock.reference,
            "synced": clock.reason_at(local) is None,
            "reason": clock.reason_at(local),
            "error_ms": None if math.isinf(error) else math.ceil(error * 1e7) / 1e4,  # rounded up
            "offset_s": clock.offset_at(local),
            "drift_ppm": round(clock.drift_ppm(), 3),
            "samples": clock.sample_count,
            "monotonic_s": mono,
            "local_s": local,
            "group_s": clock.to_group(local),
        }
