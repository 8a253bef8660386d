"""The footprint benchmark's loaded part, on one daemon with an unpaced device (``file`` over
``null``, ``[audio] keep_open_s = 0``, ``[daemon] queue_max`` = the burst; ``[tts] format``
``--burst-format``, PCM by default, ``opus`` to load the decoder too): a burst of distinct
announcements published back to back (cache misses: each synthesised, teed into the cache),
the same texts again back to back (cache hits), then a soak of cache hits one at a time.

Memory: VmRSS sampled every 20 ms through the bursts (the peak, and VmHWM over the whole
life); RSS before and after the soak. Event loop: the daemon runs under
:mod:`bench.looplag`, whose probe task reports how late the loop woke it (5 ms sleeps), per
phase: the longest stall is blocking work on the loop (disk, hashing, decoding) that holds up
every other announcement, the MQTT link and the TTS connection meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import (
    PHRASES,
    Events,
    Seen,
    peak_rss_mib,
    rss_mib,
    wait_online,
    watching,
    write_config,
)
from edgespeak.base.events import TERMINAL
from harness import stack

BURST_TEXT = "{phrase} Burst {i}."


class LagProbe:
    """The JSON lines :mod:`bench.looplag` appends to ``path`` on each SIGUSR1 to ``pid``."""

    def __init__(self, path: Path, pid: int) -> None:
        self.path, self.pid = path, pid

    def _lines(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    async def mark(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """The loop's lateness since the previous mark (the probe starts afresh).
        Raises TimeoutError when the probe does not answer within ``timeout_s`` seconds."""
        before = len(self._lines())
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            lines = self._lines()
            if len(lines) > before:
                return lines[before]
            await asyncio.sleep(0.01)  # polls the real condition, bounded by the deadline
        raise TimeoutError(f"no loop-lag line in {self.path} after {timeout_s:g} s")


class Sampler:
    """VmRSS of ``pid`` every ``interval_s`` while running (in the event loop: a /proc read)."""

    def __init__(self, pid: int, interval_s: float) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.values: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.values.append(rss_mib(self.pid))
            await asyncio.sleep(self.interval_s)  # the sampling period

    def __enter__(self) -> Sampler:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.values.append(rss_mib(self.pid))


async def unpaced_part(
    args: argparse.Namespace, work: Path, broker: int, env: dict[str, str]
) -> dict[str, Any]:
    """The bursts of misses and hits, then the soak, on one daemon with an unpaced device."""
    opus = args.burst_format == "opus"
    config = write_config(
        work / "burst.toml", work, broker,
        daemon={"queue_max": max(args.burst, 20), "state_dir": str(work / "state")},
        audio={"keep_open_s": 0},
        tts={"format": args.burst_format, "sample_rate": 48000 if opus else 22050},
    )  # fmt: skip
    server = stack.LocalServer(config, work / "server-unpaced.log", env)
    lag = work / "looplag.jsonl"
    command = [sys.executable, "-m", "bench.looplag", str(lag), "--", "run", "--config",
               str(config), "--log-level", "WARNING"]  # fmt: skip
    with (work / "daemon-burst.log").open("ab") as log:
        proc = await asyncio.to_thread(
            subprocess.Popen, command, stdout=subprocess.DEVNULL, stderr=log, env=env
        )
    probe = LagProbe(lag, proc.pid)
    out: dict[str, Any] = {}
    try:
        await asyncio.to_thread(server.start)
        await wait_online(broker)
        async with watching(broker) as events:
            await events.say("warm", "Ready.")  # the TTS connection is warm, the device open
            out["loop_lag_startup"] = await probe.mark()
            texts = [BURST_TEXT.format(phrase=PHRASES[i % len(PHRASES)].format(n=i), i=i)
                     for i in range(args.burst)]  # fmt: skip
            out["burst"] = await burst(events, proc.pid, texts, "miss")
            out["loop_lag_misses"] = await probe.mark()
            out["burst_hits"] = await burst(events, proc.pid, texts, "hit")
            out["loop_lag_hits"] = await probe.mark()
            out["soak"] = await soak(events, proc.pid, args.soak)
            out["loop_lag_soak"] = await probe.mark()
    finally:
        await asyncio.to_thread(stack.stop_process, proc)
        server.stop()
    return out


async def burst(events: Events, pid: int, texts: list[str], tag: str) -> dict[str, Any]:
    """``texts`` published back to back; returns outcomes, sources and RSS."""
    before = rss_mib(pid)
    after = len(events.seen)
    ids = [f"{tag}-{i}" for i in range(len(texts))]
    wanted = set(ids)

    def ended(seen: list[Seen]) -> list[dict[str, Any]]:
        return [e for _, e in seen[after:] if e.get("id") in wanted and e["state"] in TERMINAL]

    started = time.monotonic()
    with Sampler(pid, 0.02) as rss:
        for ann_id, text in zip(ids, texts, strict=True):
            await events.announce(ann_id, text)
        await events.until(lambda seen: len(ended(seen)) == len(ids), len(ids) * 5 + 60)
    done = ended(events.seen)
    return {
        "announcements": len(ids),
        "seconds": round(time.monotonic() - started, 2),
        "outcomes": dict(Counter(e["state"] for e in done)),
        "sources": dict(Counter(e.get("source", "-") for e in done)),
        "rss_mib_before": round(before, 1),
        "rss_mib_peak_sampled": round(max(rss.values), 1),
        "vmhwm_mib": round(peak_rss_mib(pid), 1),
    }


async def soak(events: Events, pid: int, count: int) -> dict[str, Any]:
    texts = [PHRASES[k].format(n=k) for k in range(len(PHRASES))]
    for k, text in enumerate(texts):  # fill the cache
        await events.say(f"fill-{k}", text)
    before = rss_mib(pid)
    sources: set[str] = set()
    for i in range(count):
        _, (_, done) = await events.say(f"soak-{i}", texts[i % len(texts)])
        sources.add(done["source"])
    after = rss_mib(pid)
    return {
        "announcements": count,
        "sources": sorted(sources),
        "rss_mib_before": round(before, 1),
        "rss_mib_after": round(after, 1),
        "rss_growth_mib": round(after - before, 2),
    }
