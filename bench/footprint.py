"""Footprint of ``edgespeak run``: idle RSS and PSS with the shipped defaults, startup to READY,
idle CPU, CPU per second of audio played (48 kHz Opus, and 22050 Hz PCM for comparison), the
event loop's longest stall and peak RSS in bursts of cache misses and hits, RSS growth over a
soak of cache hits.

Real parts: Mosquitto, ``edgespeak serve`` (espeak-ng) and the daemon; numbers from /proc of
the daemon's pid (the server's CPU is not counted: on a Pi it usually runs elsewhere).

- Idle memory: the daemon as shipped — a config with only what this machine needs (the broker's
  and the server's ports, cache and state directories), every other key its default — on a
  device like a Pi's (ALSA's ``plug`` > ``file`` > ``null`` with no system configuration, so no
  PulseAudio plugin is loaded, as on Raspberry Pi OS Lite). It runs from a private copy of
  libpython and of the extension modules (:mod:`bench.isolated`), so the TTS server, this
  benchmark and other Python processes here share no pages with it: PSS is what it would be on
  a Pi whose TTS server runs elsewhere (system libraries stay shared, as anywhere). One
  announcement, ``keep_open_s`` plus a second to settle, then ``--idle-s`` seconds (60): VmRSS
  every second, CPU (% of one core), then RSS and PSS from ``/proc/PID/smaps_rollup``. Again
  after one Opus announcement (``[tts] format = "opus"``), and with this machine's own ALSA
  configuration (whose PulseAudio hook maps libpulse and its libraries into every ALSA client).
- Startup: ``--starts`` launches, each timed from spawning the process to the ``READY=1`` it
  sends to a ``NOTIFY_SOCKET`` datagram socket this benchmark owns (as systemd's; the daemon
  sends it once the broker is connected and the TTS connection warm). Python's start-up and
  imports included.
- CPU per second played: one long announcement (``--speech-s``, about 60 s of espeak-ng speech)
  on a device paced in real time (ALSA ``file`` over a PulseAudio null sink), cache on as
  shipped; the daemon's CPU seconds from publish to ``finished`` over ``duration_s``. Opus: the
  server sends Ogg Opus at 48 kHz, the daemon decodes it (libopus) and plays 48 kHz. PCM: s16le
  at 22050 Hz, nothing to decode.
- Bursts, loop lag and soak: :mod:`bench.burst`.

- Long stream: :mod:`bench.longstream`.

``python -m bench footprint [--idle-s 60] [--starts 5] [--speech-s 60] [--burst 100]
[--soak 1000] [--stream-min 10]`` (``--quick``: 10 s idle, 2 starts, 10 s speech, 100 burst,
100 soak, an 18 s stream)
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

from bench.burst import Sampler, unpaced_part
from bench.common import (
    NODE,
    Events,
    Result,
    cpu_s,
    dist_row,
    rss_mib,
    start_daemon,
    value_row,
    wait_online,
    watching,
    write_config,
)
from bench.isolated import private_python, unit_python_env, warm_bytecode
from bench.longstream import long_stream
from harness import stack

NAME = "footprint"
HELP = "daemon: idle RSS/PSS as shipped, startup, CPU per second, loop lag, burst and soak RSS"
SENTENCE = (
    "This is sentence {i} of the footprint benchmark, spoken only to measure how much "
    "processor time the daemon needs to decode and play it."
)
SENTENCE_S = 7.0  # about how long espeak-ng speaks SENTENCE, seconds
READY_STATUS = "ready: broker connected, TTS connection warm"
IDLE_TEXT = "Someone is at the front door."
KEEP_OPEN_S = 3.0  # [audio] keep_open_s as shipped: the device closes after this
ROLLUP = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Private_Clean", "Private_Dirty")


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
    """Startups, idle CPU, and CPU per second played (PCM then Opus), on the paced device."""
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
                    out["pcm"] = await speak_long(events, proc.pid, args.speech_s, "long-pcm")
            out["startup_ms"] = starts
            async with daemon(opus, env, work / "daemon-opus.log", notify) as (proc, _):
                await wait_online(broker)
                out["opus"] = await speak_long(events, proc.pid, args.speech_s, "long-opus")
    finally:
        server.stop()
        notify.close()
    return out


def rollup_mib(pid: int) -> dict[str, float]:
    """The :data:`ROLLUP` fields of ``/proc/PID/smaps_rollup``, MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        if key in ROLLUP:
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


def pi_like_alsa(conf: Path) -> dict[str, str]:
    """The environment selecting an ALSA configuration of only ``plug`` > ``file`` > ``null``:
    none of the system's hooks (this machine's PulseAudio one maps libpulse into the daemon;
    a Pi with Raspberry Pi OS Lite and ``scripts/install`` has no such hook)."""
    conf.write_text(
        "pcm.!default {\n type plug\n slave.pcm { type file slave.pcm { type null }"
        ' file "/dev/null" format "raw" }\n}\n'
    )
    return {"ALSA_CONFIG_PATH": str(conf)}


def shipped_config(path: Path, work: Path, broker: int, server: int, **tts: str) -> Path:
    """The daemon's config as shipped: only node id, ports and directories set (and ``tts``)."""
    extra = "".join(f'{key} = "{value}"\n' for key, value in tts.items())
    path.write_text(
        f'node_id = "{NODE}"\n[mqtt]\nport = {broker}\n[tts]\n{extra}[server]\nport = {server}\n'
        f'[cache]\ndir = "{path.parent / (path.stem + "-cache")}"\n'
        f'[daemon]\nstate_dir = "{work / "state-shipped"}"\n'
    )
    return path


async def idle_after_one(
    events: Events,
    broker: int,
    command: list[str],
    env: dict[str, str],
    log: Path,
    seconds: float,
) -> dict[str, Any]:
    """``command`` (a daemon) speaks one announcement, settles, then idles ``seconds``: VmRSS
    each second, CPU, and the smaps_rollup fields at the end."""
    with log.open("ab") as err:
        proc = await asyncio.to_thread(
            subprocess.Popen, command, stdout=subprocess.DEVNULL, stderr=err, env=env
        )
    try:
        await wait_online(broker)
        _, (_, done) = await events.say(f"idle-{log.stem}", IDLE_TEXT)
        await asyncio.sleep(KEEP_OPEN_S + 1.0)  # the device closes, the node settles
        cpu0, t0 = cpu_s(proc.pid), time.monotonic()
        with Sampler(proc.pid, 1.0) as rss:
            await asyncio.sleep(seconds)  # the idle window itself
        wall = time.monotonic() - t0
        return {
            "source": done["source"],
            "seconds": round(wall, 1),
            "cpu_percent_of_one_core": round(100 * (cpu_s(proc.pid) - cpu0) / wall, 3),
            "rss_mib_mean": round(sum(rss.values) / len(rss.values), 1),
            "rss_mib_max": round(max(rss.values), 1),
            "smaps_rollup_mib": rollup_mib(proc.pid),
        }
    finally:
        await asyncio.to_thread(stack.stop_process, proc)


async def idle_part(
    args: argparse.Namespace, work: Path, broker: int, machine_env: dict[str, str]
) -> dict[str, Any]:
    """Idle memory as shipped: PCM (the default), Opus, and PCM on this machine's ALSA."""
    port = stack.free_port()
    server_config = work / "server-idle.toml"
    server_config.write_text(f"[server]\nport = {port}\n")
    server = stack.LocalServer(server_config, work / "server-idle.log", machine_env)
    shipped = unit_python_env(work / "unit-cache")
    pi_env = stack.clean_env(**pi_like_alsa(work / "pi-like.conf"), **shipped)
    short = min(args.idle_s, 10.0)
    runs = [
        ("idle", shipped_config(work / "shipped.toml", work, broker, port), pi_env, args.idle_s),
        ("idle_opus", shipped_config(work / "shipped-opus.toml", work, broker, port,
                                     format="opus"), pi_env, short),
        ("idle_machine_alsa", shipped_config(work / "shipped-machine.toml", work, broker, port),
         machine_env, short),
        ("idle_plain_python", shipped_config(work / "shipped-plain.toml", work, broker, port),
         {k: v for k, v in pi_env.items() if k not in shipped}, short),
    ]  # fmt: skip
    python, private = await asyncio.to_thread(private_python, work)
    await asyncio.to_thread(warm_bytecode, python, pi_env | private)
    out: dict[str, Any] = {}
    try:
        await asyncio.to_thread(server.start)
        async with watching(broker) as events:
            for name, config, env, seconds in runs:
                command = [python, "-m", "edgespeak", "run", "--config", str(config),
                           "--log-level", "WARNING"]  # fmt: skip
                log = work / f"daemon-{name}.log"
                out[name] = await idle_after_one(
                    events, broker, command, env | private, log, seconds
                )
    finally:
        server.stop()
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--idle-s", type=float, help="idle window, s (60; quick 10)")
    parser.add_argument("--starts", type=int, help="timed startups (5; quick 2)")
    parser.add_argument("--speech-s", type=float, help="long announcement, ~s (60; quick 10)")
    parser.add_argument("--burst", type=int, default=100, help="announcements at once (100)")
    parser.add_argument("--soak", type=int, help="cache hits in the soak (1000; quick 100)")
    parser.add_argument("--stream-min", type=float, help="long stream, minutes (10; quick 0.3)")
    parser.add_argument("--burst-format", choices=["pcm", "opus"], default="pcm",
                        help="[tts] format of the bursts (pcm)")  # fmt: skip


def run(args: argparse.Namespace) -> Result:
    args.idle_s = args.idle_s or (10.0 if args.quick else 60.0)
    args.starts = args.starts or (2 if args.quick else 5)
    args.speech_s = args.speech_s or (10.0 if args.quick else 60.0)
    args.soak = args.soak or (100 if args.quick else 1000)
    args.stream_min = args.stream_min or (0.3 if args.quick else 10.0)
    if args.starts < 2 or args.burst < 1 or args.soak < 1:
        raise ValueError("--starts at least 2, --burst and --soak at least 1")
    work = Path(tempfile.mkdtemp(prefix="edgespeak-bench-footprint-"))
    pulse = stack.PulseAudio(work)
    broker = stack.Mosquitto(stack.free_port(), work)
    shipped = unit_python_env(work / "unit-cache")  # the interpreter as the unit runs it
    print(
        "as shipped (systemd/edgespeak.service):", " ".join(f"{k}={v}" for k, v in shipped.items())
    )
    alsa_paced = stack.capture_alsa_conf(
        work / "paced.conf", Path("/dev/null"), pulse_server=pulse.server
    )
    paced = stack.clean_env(**alsa_paced, **shipped)
    unpaced = stack.clean_env(**stack.capture_alsa_conf(work / "null.conf", Path("/dev/null")))
    unpaced |= shipped
    try:
        pulse.start()
        broker.start()
        out = asyncio.run(idle_part(args, work, broker.port, unpaced))
        out |= asyncio.run(paced_part(args, work, broker.port, paced))
        out["long_stream"] = asyncio.run(long_stream(args, work, broker.port, paced))
        out |= asyncio.run(unpaced_part(args, work, broker.port, unpaced))
        out["interpreter"] = shipped  # systemd/edgespeak.service's PYTHON* settings
    except BaseException:
        print(f"footprint bench: logs kept in {work}")
        raise
    finally:
        broker.stop()
        pulse.stop()
    shutil.rmtree(work, ignore_errors=True)
    return report(args, out)


def _lag_row(what: str, lag: dict[str, Any]) -> Result:
    """The probe's figures: the longest stall, the p99 of the 5 ms wakes' lateness, and the most
    CPU the loop's thread used in one of them (work on the loop, not waiting)."""
    figures = f"{lag['max_ms']:g} / {lag['p99_ms']:g} / {lag['max_cpu_ms']:g}"
    return value_row(f"loop lag, {what}: max / p99 / max loop CPU", figures, "ms")


def report(args: argparse.Namespace, out: dict[str, Any]) -> Result:
    idle, opus, machine = out["idle"], out["idle_opus"], out["idle_machine_alsa"]
    b, hits, s, long = out["burst"], out["burst_hits"], out["soak"], out["long_stream"]
    mem = idle["smaps_rollup_mib"]
    fmt = "" if args.burst_format == "pcm" else f"{args.burst_format} "
    rows = [
        value_row("idle as shipped, after one announcement: RSS", mem["Rss"], "MiB"),
        value_row("idle as shipped, after one announcement: PSS", mem["Pss"], "MiB"),
        value_row("idle after one Opus announcement: RSS / PSS",
                  f"{opus['smaps_rollup_mib']['Rss']} / {opus['smaps_rollup_mib']['Pss']}", "MiB"),
        value_row("idle, this machine's ALSA config (PulseAudio hook): RSS",
                  machine["smaps_rollup_mib"]["Rss"], "MiB"),
        value_row("idle, plain python (not the unit's -OO): RSS",
                  out["idle_plain_python"]["smaps_rollup_mib"]["Rss"], "MiB"),
        value_row(f"idle {idle['seconds']:g} s: CPU, % of one core",
                  idle["cpu_percent_of_one_core"], "%"),
        dist_row("startup: spawn -> READY=1", out["startup_ms"]),
        value_row(f"48 kHz Opus, {out['opus']['seconds_played']:.0f} s played: CPU s per s, %",
                  out["opus"]["cpu_percent_of_one_core"], "%"),
        value_row(f"22050 Hz PCM, {out['pcm']['seconds_played']:.0f} s played: CPU s per s, %",
                  out["pcm"]["cpu_percent_of_one_core"], "%"),
        value_row("underruns in those: Opus / PCM",
                  f"{out['opus']['underruns']} / {out['pcm']['underruns']}"),
        _lag_row(f"{b['announcements']} {fmt}cache misses", out["loop_lag_misses"]),
        _lag_row(f"{hits['announcements']} {fmt}cache hits", out["loop_lag_hits"]),
        value_row(f"burst of {b['announcements']} misses, then hits: peak RSS (20 ms samples)",
                  max(b["rss_mib_peak_sampled"], hits["rss_mib_peak_sampled"]), "MiB"),
        value_row(f"soak, {s['announcements']} cache hits: RSS growth", s["rss_growth_mib"], "MiB"),
        value_row(f"{long['minutes']:g} min stream (paced): peak RSS minus RSS before",
                  long["rss_mib_growth_peak"], "MiB"),
        value_row("edgespeak serve idle RSS", out["server_idle_rss_mib"], "MiB"),
    ]  # fmt: skip
    keys = ("idle_s", "starts", "speech_s", "burst", "soak", "stream_min", "burst_format")
    config = {k: getattr(args, k) for k in keys}
    return {"rows": rows, "config": config} | out
