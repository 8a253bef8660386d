"""Rooms: several daemons playing the same group announcement, measured as listeners hear them.

harness.rooms: ``--nodes`` daemons (3) in group ``house`` on one Mosquitto and one
``edgespeak serve`` (espeak-ng), each on its own PulseAudio null sink paced in real time, each
sink's output recorded with time stamps. ``-n`` announcements (50) alternate a **miss** (a new
phrase: every node without it in its cache) and a **hit** (the previous phrase again), and
alternate the target between ``edgespeak/all/announce`` and ``edgespeak/group/house/announce``;
each is published ``--gap-s`` (0.5 s) after every node ended the previous one (the devices
still kept open, ``[audio] keep_open_s`` = 3 s).

Per announcement: the **start spread**, the latest node's first sound minus the earliest's (a
sample at or above -30 dBFS in each sink's recording); each node's **heard latency**, its first
sound minus the publish (it includes espeak-ng's ~12 ms lead-in, alike everywhere); the local
server's **sessions** (counted in its log); the **broker bytes**: Mosquitto's
``$SYS/broker/bytes/received`` and ``sent`` over the measured run (``sys_interval 1``; ``sent``
includes the copy delivered to the bench's own subscriber) and the topic + payload bytes of
every message under the prefix, each divided by the seconds of speech played.

``--sync off`` is today's behaviour, every node synthesising on its own: on an edgespeak without
the ``[group]`` section nothing is written, else ``[group] sync = false``. ``--sync on`` writes
``[group] sync = true`` (issue 16); ``both`` runs off, then on, and gives the latency the group
adds (on - off, p50). The default is ``both`` when ``[group]`` exists, else ``off``; the setting
is printed.

``python -m bench rooms [-n 50] [--nodes 3] [--sync off|on|both]`` (quick: 4 announcements).
Needs mosquitto, pulseaudio, pulseaudio-utils, espeak-ng.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import PHRASES, Result, Row, dist_row, rounded, value_row
from harness.rooms import Heard, Rooms, Sent, has_group_config, measure, spread_summary
from harness.rooms_ears import SYS_TOPICS, listening

NAME = "rooms"
HELP = "start spread of one group announcement over several real-time sinks, sync off/on"
GROUP = "house"
TIMEOUT_S = 60.0


def phrase(i: int) -> str:
    """The ``i``-th new phrase of a run (distinct for every ``i``)."""
    return f"{PHRASES[i % len(PHRASES)].format(n=i + 3)} Message {i}."


async def announce_all(rooms: Rooms, count: int, gap_s: float) -> tuple[list[Sent], dict[str, int]]:
    """``count`` announcements (misses and hits alternating, module docstring); the sent ones
    and the $SYS byte counters' increase over them."""
    nodes = list(rooms.nodes)
    async with listening(rooms.broker.port) as ears:
        await ears.wait_online(nodes)
        if rooms.sync:  # every node's group clock synced (else it plays at once, by design)
            try:
                await ears.wait_synced(nodes)
            except TimeoutError as exc:  # measured all the same: what a user would get
                print(f"rooms bench: {exc}", file=sys.stderr)
        await ears.say(rooms, "Ready.", GROUP, timeout_s=TIMEOUT_S)  # warm up (not measured)
        before = await ears.wait_sys()
        sents: list[Sent] = []
        for i in range(count):
            text = phrase(i // 2)  # a miss, then the same again: a hit
            target = "all" if (i // 2) % 2 == 0 else GROUP
            sents.append(await ears.say(rooms, text, target, timeout_s=TIMEOUT_S))
            await asyncio.sleep(gap_s)  # the stimulus: the next one this long after
        after = await ears.wait_sys()
    return sents, {t.rsplit("/", 1)[-1]: after[t] - before[t] for t in SYS_TOPICS}


def run_mode(args: argparse.Namespace, sync: bool) -> tuple[list[Heard], dict[str, int]]:
    """One whole run with ``[group] sync`` = ``sync``; each announcement heard, and $SYS."""
    work = Path(tempfile.mkdtemp(prefix=f"edgespeak-bench-rooms-{'on' if sync else 'off'}-"))
    rooms = Rooms(work, {f"room{k}": [GROUP] for k in range(1, args.nodes + 1)}, sync=sync)
    try:
        with rooms:
            sents, sys_bytes = asyncio.run(announce_all(rooms, args.n, args.gap_s))
            heard = measure(sents, rooms.stop_recordings())
    except BaseException:
        print(f"rooms bench: logs kept in {work}", file=sys.stderr)
        raise
    missing = [h.sent.ann_id for h in heard if len(h.heard) != len(h.sent.nodes)]
    if missing:
        print(f"rooms bench: logs kept in {work}", file=sys.stderr)
        raise RuntimeError(f"not heard on every node: {missing}")
    shutil.rmtree(work, ignore_errors=True)
    return heard, sys_bytes


def offsets(heard: list[Heard]) -> list[float]:
    """Every node's own ``group.start_offset_ms`` (heard start - planned start, from its ALSA
    delay) in the events of ``heard``: empty when sync is off."""
    found = []
    for h in heard:
        for event in h.sent.events.values():
            group = event.get("group")
            if isinstance(group, dict) and isinstance(group.get("start_offset_ms"), int | float):
                found.append(float(group["start_offset_ms"]))
    return found


def summarise(heard: list[Heard], sys_bytes: dict[str, int]) -> dict[str, Any]:
    """Spread and latency per kind, sessions, bytes per second of speech."""
    out: dict[str, Any] = {}
    for kind in ("miss", "hit"):
        these = [h for h in heard if h.sent.kind == kind]
        out[kind] = {
            "spread_ms": spread_summary([h.spread_ms or 0.0 for h in these]),
            "heard_ms": spread_summary([v for h in these for v in h.latency_ms.values()]),
            "sessions": [h.sent.sessions for h in these],
            "start_offset_ms": rounded(offsets(these), 2),
            "spread_samples": rounded([h.spread_ms or 0.0 for h in these], 2),
        }
    speech_s = sum(h.sent.speech_s for h in heard)
    payload = sum(h.sent.bytes for h in heard)
    out["speech_s"] = round(speech_s, 2)
    out["broker_bytes_per_speech_s"] = {
        name: round(value / speech_s) for name, value in sys_bytes.items()
    } | {"payloads": round(payload / speech_s)}
    return out


def rows_of(mode: str, summary: dict[str, Any], heard: list[Heard]) -> list[Row]:
    rows: list[Row] = []
    for kind, label in (("miss", "miss (new phrase)"), ("hit", "hit (cached)")):
        these = [h for h in heard if h.sent.kind == kind]
        spreads = [h.spread_ms or 0.0 for h in these]
        latencies = [v for h in these for v in h.latency_ms.values()]
        if len(spreads) >= 2:
            rows.append(dist_row(f"sync {mode}, {label}: start spread between rooms", spreads))
            rows.append(dist_row(f"sync {mode}, {label}: publish -> heard, each room", latencies))
        sessions = summary[kind]["sessions"]
        per = sum(sessions) / len(sessions) if sessions else 0.0
        rows.append(value_row(f"sync {mode}, {label}: server sessions per phrase", per))
    per_s = summary["broker_bytes_per_speech_s"]
    rows.append(value_row(f"sync {mode}: broker bytes received per s of speech", per_s["received"]))
    rows.append(value_row(f"sync {mode}: broker bytes sent per s of speech", per_s["sent"]))
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", type=int, help="announcements per mode (50; quick 4)")
    parser.add_argument("--nodes", type=int, default=3, help="daemons, each its own sink (3)")
    parser.add_argument("--gap-s", type=float, default=0.5, help="after all ended (0.5 s)")
    parser.add_argument(
        "--sync", choices=["off", "on", "both"], help="[group] sync (both if it exists, else off)"
    )


def run(args: argparse.Namespace) -> Result:
    """Run the modes asked for; the result (rows, summary, samples). Raises RuntimeError."""
    args.n = args.n or (4 if args.quick else 50)
    if args.n < 4 or args.nodes < 2:
        raise ValueError("-n must be at least 4 and --nodes at least 2")
    built = has_group_config()
    args.sync = args.sync or ("both" if built else "off")
    if args.sync != "off" and not built:
        raise RuntimeError("--sync on needs the [group] section (issue 16), not in this build")
    modes = ["off", "on"] if args.sync == "both" else [args.sync]
    print(f"rooms: sync {args.sync} ([group] section {'present' if built else 'absent'})")
    for tool in ("parec", "pulseaudio", "mosquitto", "espeak-ng"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise RuntimeError(f"{tool} is not installed")
    rows: list[Row] = []
    summary: dict[str, Any] = {}
    for mode in modes:
        heard, sys_bytes = run_mode(args, mode == "on")
        for h in heard:
            print(f"  sync {mode}: {h.describe()}; {h.sent.sessions} sessions")
        summary[f"sync {mode}"] = summarise(heard, sys_bytes)
        rows += rows_of(mode, summary[f"sync {mode}"], heard)
    if len(modes) == 2:
        for kind in ("miss", "hit"):
            on, off = (summary[f"sync {m}"][kind]["heard_ms"]["p50"] for m in ("on", "off"))
            added = round(on - off, 2)
            summary[f"added_latency_{kind}_ms"] = added
            rows.append(
                value_row(f"group sync adds to publish -> heard, {kind} (p50)", added, "ms")
            )
    return {
        "rows": rows,
        "config": {
            "announcements": args.n,
            "nodes": args.nodes,
            "gap_s": args.gap_s,
            "sync": args.sync,
            "group_section": built,
            "sink": "each node: ALSA default = type pulse on its own PulseAudio null sink",
        },
        "summary": summary,
    }
