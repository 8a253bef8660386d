"""Footprint of ``edgespeak run``: startup to READY, idle RSS and CPU, CPU per second of audio
played (48 kHz Opus, and 22050 Hz PCM for comparison), peak RSS in a 100-announcement burst,
and RSS growth over a soak of cache hits.

Real parts: Mosquitto, ``edgespeak serve`` (espeak-ng) and the daemon; numbers from /proc of
the daemon's pid (the server's CPU is not counted: on a Pi it usually runs elsewhere).

- Startup: ``--starts`` launches, each timed from spawning the process to the ``READY=1`` it
  sends to a ``NOTIFY_SOCKET`` datagram socket this benchmark owns (as systemd's; the daemon
  sends it once the broker is connected and the TTS connection warm). Python's start-up and
  imports included.
- Idle: after the last start, one second to settle, then ``--idle-s`` seconds (60) with no
  announcement: CPU (user + system, % of one core) and VmRSS sampled every second; PSS at the
  end (shared library pages divided among their users: the fairer figure on a small machine).
- CPU per second played: one long announcement (``--speech-s``, about 60 s of espeak-ng speech)
  on a device paced in real time (ALSA ``file`` over a PulseAudio null sink), cache on as
  shipped; the daemon's CPU seconds from publish to ``finished`` over ``duration_s``. Opus: the
  server sends Ogg Opus at 48 kHz, the daemon decodes it (libopus) and plays 48 kHz. PCM: s16le
  at 22050 Hz, nothing to decode.
- Burst: a daemon on an unpaced device (``file`` over ``null``) with ``[daemon] queue_max =
  100`` gets 100 distinct announcements published back to back; VmRSS sampled every 20 ms until
  the last one ended; the peak, and VmHWM (peak over the whole life, start-up included).
- Soak: on that daemon, ``--soak`` cache hits of 5 short phrases, one at a time: RSS before and
  after, and the growth.

``python -m bench footprint [--idle-s 60] [--starts 5] [--speech-s 60] [--burst 100]
[--soak 1000]`` (``--quick``: 10 s idle, 2 starts, 10 s speech, 100 burst, 100 soak)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.common import (
    PHRASES,
    Events,
    Result,
    Seen,
    cpu_s,
    dist_row,
    peak_rss_mib,
    pss_mib,
    rss_mib,
    start_daemon,
    value_row,
    wait_online,
    watching,
    write_config,
)
from edgespeak.base.events import TERMINAL
from harness import stack

NAME = "footprint"
HELP = "daemon: startup to READY, idle RSS/CPU, CPU per second of Opus, burst and soak RSS"
SENTENCE = (
    "This is sentence {i} of the footprint benchmark, spoken only to measure how much "
    "processor time the daemon needs to decode and play it."
)
SENTENCE_S = 7.0  # about how long espeak-ng speaks SENTENCE, seconds
READY_STATUS = "ready: broker connected, TTS connection warm"


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)

    async def ready(self, timeout_s: float = stack.STARTUP_S) -> tuple[float, str]:
        """(``time.monotonic()`` of the next ``READY=1``, its ``STATUS``); TimeoutError after
        ``timeout_s`` seconds."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            while True:
                data = await loop.sock_recv(self.sock, 4096)
                at = time.monotonic()
                fields = dict(
                    line.split("=", 1) for line in data.decode().splitlines() if "=" in line
                )
                if fields.get("READY") == "1":
                    return at, fields.get("STATUS", "")

    def close(self) -> None:
        self.sock.close()


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


@contextlib.asynccontextmanager
async def daemon(
    config: Path, env: dict[str, str], log: Path, notify: NotifySocket
) -> AsyncIterator[tuple[subprocess.Popen[bytes], float]]:
    """``edgespeak run`` under ``notify``; yields (process, seconds from spawn to READY).

    Raises RuntimeError when it comes up degraded."""
    spawned = time.monotonic()
    proc = start_daemon(config, env | {"NOTIFY_SOCKET": str(notify.path)}, log)
    try:
        at, status = await notify.ready()
        if status != READY_STATUS:
            raise RuntimeError(f"the daemon came up {status!r} (see {log})")
        yield proc, at - spawned
    finally:
        await asyncio.to_thread(stack.stop_process, proc)


async def speak_long(events: Events, pid: int, seconds: float, tag: str) -> dict[str, float]:
    """One announcement of about ``seconds`` of speech; the daemon's CPU per second played."""
    count = round(seconds / SENTENCE_S)
    text = " ".join(SENTENCE.format(i=i) for i in range(count)) or "A short footprint test."
    before = cpu_s(pid)
    _, (_, done) = await events.say(tag, text, timeout_s=seconds * 3 + 60)
    used = cpu_s(pid) - before
    played = float(done["duration_s"])
    return {
        "seconds_played": played,
        "cpu_s": round(used, 3),
        "cpu_percent_of_one_core": round(100 * used / played, 2),
        "underruns": done.get("underruns", 0),
    }


async def paced_part(
    args: argparse.Namespace, work: Path, broker: int, env: dict[str, str]
) -> dict[str, Any]:
    """Startups, idle, and CPU per second played (PCM then Opus), on the paced device."""
    notify = NotifySocket(work / "notify.sock")
    out: dict[str, Any] = {}
    shared: dict[str, Any] = {
        "server": {"port": stack.free_port()},  # one server for both
        "limits": {"max_text_chars": 5000},
    }
    pcm = write_config(work / "pcm.toml", work, broker, **shared)
    opus = write_config(
        work / "opus.toml", work, broker, tts={"format": "opus", "sample_rate": 48000}, **shared
    )
    server = stack.LocalServer(pcm, work / "server.log", env)
    try:
        await asyncio.to_thread(server.start)
        assert server.proc is not None
        out["server_idle_rss_mib"] = round(rss_mib(server.proc.pid), 1)
        starts: list[float] = []
        async with watching(broker) as events:
            for i in range(args.starts):
                async with daemon(pcm, env, work / "daemon-pcm.log", notify) as (proc, ready_s):
                    starts.append(ready_s * 1000)
                    if i < args.starts - 1:
                        continue
                    await wait_online(broker)
                    await asyncio.sleep(1.0)  # let start-up work settle before the window
                    out["idle"] = await idle(proc.pid, args.idle_s)
                    out["pcm"] = await speak_long(events, proc.pid, args.speech_s, "long-pcm")
            out["startup_ms"] = starts
            async with daemon(opus, env, work / "daemon-opus.log", notify) as (proc, _):
                await wait_online(broker)
                out["opus"] = await speak_long(events, proc.pid, args.speech_s, "long-opus")
    finally:
        server.stop()
        notify.close()
    return out


async def idle(pid: int, seconds: float) -> dict[str, float]:
    cpu0, t0 = cpu_s(pid), time.monotonic()
    with Sampler(pid, 1.0) as rss:
        await asyncio.sleep(seconds)  # the idle window itself
    wall = time.monotonic() - t0
    return {
        "seconds": round(wall, 1),
        "cpu_percent_of_one_core": round(100 * (cpu_s(pid) - cpu0) / wall, 3),
        "rss_mib_mean": round(sum(rss.values) / len(rss.values), 1),
        "rss_mib_max": round(max(rss.values), 1),
        "pss_mib": round(pss_mib(pid), 1),
    }


async def unpaced_part(
    args: argparse.Namespace, work: Path, broker: int, env: dict[str, str]
) -> dict[str, Any]:
    """The burst, then the soak, on one daemon with an unpaced device."""
    config = write_config(
        work / "burst.toml", work, broker,
        daemon={"queue_max": max(args.burst, 20), "state_dir": str(work / "state")},
        audio={"keep_open_s": 0},
    )  # fmt: skip
    server = stack.LocalServer(config, work / "server-unpaced.log", env)
    proc = start_daemon(config, env, work / "daemon-burst.log")
    out: dict[str, Any] = {}
    try:
        await asyncio.to_thread(server.start)
        await wait_online(broker)
        async with watching(broker) as events:
            await events.say("warm", "Ready.")  # the TTS connection is warm, the device open
            out["burst"] = await burst(events, proc.pid, args.burst)
            out["soak"] = await soak(events, proc.pid, args.soak)
    finally:
        await asyncio.to_thread(stack.stop_process, proc)
        server.stop()
    return out


async def burst(events: Events, pid: int, count: int) -> dict[str, Any]:
    before = rss_mib(pid)
    after = len(events.seen)
    with Sampler(pid, 0.02) as rss:
        ids = [f"burst-{i}" for i in range(count)]
        for i, ann_id in enumerate(ids):
            await events.announce(ann_id, PHRASES[i % len(PHRASES)].format(n=i) + f" Burst {i}.")
        wanted = set(ids)

        def ended(seen: list[Seen]) -> bool:
            return len({e["id"] for _, e in seen[after:] if e.get("id") in wanted
                        and e["state"] in TERMINAL}) == count  # fmt: skip

        await events.until(ended, timeout_s=count * 5 + 60)
    states = {e["id"]: e["state"] for _, e in events.seen[after:]
              if e.get("id") in wanted and e["state"] in TERMINAL}  # fmt: skip
    outcome = {state: list(states.values()).count(state) for state in set(states.values())}
    return {
        "announcements": count,
        "outcomes": outcome,
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--idle-s", type=float, help="idle window, s (60; quick 10)")
    parser.add_argument("--starts", type=int, help="timed startups (5; quick 2)")
    parser.add_argument("--speech-s", type=float, help="long announcement, ~s (60; quick 10)")
    parser.add_argument("--burst", type=int, default=100, help="announcements at once (100)")
    parser.add_argument("--soak", type=int, help="cache hits in the soak (1000; quick 100)")


def run(args: argparse.Namespace) -> Result:
    args.idle_s = args.idle_s or (10.0 if args.quick else 60.0)
    args.starts = args.starts or (2 if args.quick else 5)
    args.speech_s = args.speech_s or (10.0 if args.quick else 60.0)
    args.soak = args.soak or (100 if args.quick else 1000)
    if args.starts < 2 or args.burst < 1 or args.soak < 1:
        raise ValueError("--starts at least 2, --burst and --soak at least 1")
    work = Path(tempfile.mkdtemp(prefix="edgespeak-bench-footprint-"))
    pulse = stack.PulseAudio(work)
    broker = stack.Mosquitto(stack.free_port(), work)
    paced = stack.clean_env(
        **stack.capture_alsa_conf(work / "paced.conf", Path("/dev/null"), pulse_server=pulse.server)
    )
    unpaced = stack.clean_env(**stack.capture_alsa_conf(work / "null.conf", Path("/dev/null")))
    try:
        pulse.start()
        broker.start()
        out = asyncio.run(paced_part(args, work, broker.port, paced))
        out |= asyncio.run(unpaced_part(args, work, broker.port, unpaced))
    except BaseException:
        print(f"footprint bench: logs kept in {work}")
        raise
    finally:
        broker.stop()
        pulse.stop()
    shutil.rmtree(work, ignore_errors=True)
    return report(args, out)


def report(args: argparse.Namespace, out: dict[str, Any]) -> Result:
    idle, b, s = out["idle"], out["burst"], out["soak"]
    rows = [
        dist_row("startup: spawn -> READY=1", out["startup_ms"]),
        value_row(f"idle {idle['seconds']:g} s: CPU, % of one core",
                  idle["cpu_percent_of_one_core"], "%"),
        value_row("idle: RSS (mean of 1 s samples)", idle["rss_mib_mean"], "MiB"),
        value_row("idle: PSS", idle["pss_mib"], "MiB"),
        value_row(f"48 kHz Opus, {out['opus']['seconds_played']:.0f} s played: CPU s per s, %",
                  out["opus"]["cpu_percent_of_one_core"], "%"),
        value_row(f"22050 Hz PCM, {out['pcm']['seconds_played']:.0f} s played: CPU s per s, %",
                  out["pcm"]["cpu_percent_of_one_core"], "%"),
        value_row("underruns in those: Opus / PCM",
                  f"{out['opus']['underruns']} / {out['pcm']['underruns']}"),
        value_row(f"burst of {b['announcements']}: peak RSS (20 ms samples)",
                  b["rss_mib_peak_sampled"], "MiB"),
        value_row(f"soak, {s['announcements']} cache hits: RSS growth", s["rss_growth_mib"], "MiB"),
        value_row("edgespeak serve idle RSS", out["server_idle_rss_mib"], "MiB"),
    ]  # fmt: skip
    config = {k: getattr(args, k) for k in ("idle_s", "starts", "speech_s", "burst", "soak")}
    return {"rows": rows, "config": config} | out
