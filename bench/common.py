"""What every benchmark shares: statistics, the machine's description, /proc readings, the
bench stack's config and its MQTT event watcher.

Times are milliseconds unless a name says otherwise; memory is MiB (2^20 bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import platform
import socket
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt

from edgespeak.base.events import TERMINAL
from harness import stack

NODE = "bench"
TOPIC = f"edgespeak/{NODE}"
ANNOUNCE_TOPIC = f"{TOPIC}/announce"
EVENT_TOPIC = f"{TOPIC}/event"
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
# No benchmark wants the per-topic rate limit ([limits] rate, default 20/minute) in its way.
UNLIMITED_RATE = "1000000/second"

PHRASES = [
    "Someone is at the front door.",
    "The washing machine has finished.",
    "The garage door has been open for {n} minutes.",
    "Good morning. It is {n} degrees outside.",
    "Attention: motion detected in the garden. Camera {n} is recording.",
]

Result = dict[str, Any]
Row = dict[str, Any]


# ---- statistics ---------------------------------------------------------------------------
def quantiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99 of ``values`` (inclusive method: p99 of 100 samples sits between the two
    largest), rounded to 3 decimals, and ``n``. Raises ValueError with fewer than 2 values."""
    if len(values) < 2:
        raise ValueError(f"need at least 2 samples for percentiles, got {len(values)}")
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(q[49], 3), "p90": round(q[89], 3), "p99": round(q[98], 3)} | {
        "n": len(values)
    }


def percentiles(values: list[float]) -> str:
    """``p50 p90 p99`` of ``values`` for a table (7 characters each), or "-" when too few."""
    if len(values) < 2:
        return "-"
    q = quantiles(values)
    return f"{q['p50']:7.1f} {q['p90']:7.1f} {q['p99']:7.1f}"


def dist_row(measure: str, values: list[float], unit: str = "ms") -> Row:
    """A table row of a distribution: ``measure`` with p50/p90/p99 and n of ``values``."""
    return {"measure": measure, "unit": unit} | quantiles(values)


def value_row(measure: str, value: float | int | str | None, unit: str = "") -> Row:
    """A table row of one figure."""
    return {"measure": measure, "unit": unit, "value": value}


def ratio_row(measure: str, over: dict[str, float], under: dict[str, float]) -> Row:
    """``over``/``under`` at p50 and p99 (a "how many times" row)."""
    return {
        "measure": measure,
        "unit": "x",
        "p50": round(over["p50"] / under["p50"], 2),
        "p99": round(over["p99"] / under["p99"], 2),
    }


def rounded(values: list[float], digits: int = 3) -> list[float]:
    return [round(v, digits) for v in values]


# ---- the machine ----------------------------------------------------------------------------
def tool_version(*cmd: str) -> str:
    """First line of ``cmd``'s output, or "" when it cannot run."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return ""
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else ""


def alsa_lib_version() -> str:
    """The version of the alsa-lib this process would load."""
    try:
        lib = ctypes.CDLL("libasound.so.2")
    except OSError:
        return ""
    lib.snd_asoundlib_version.restype = ctypes.c_char_p
    version = lib.snd_asoundlib_version()
    return version.decode() if isinstance(version, bytes) else ""


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (/proc/loadavg)."""
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def machine() -> Result:
    """CPU model, cores, architecture, kernel, Python, memory (MiB), load averages now."""
    info: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    names = [info[k] for k in ("model name", "Model") if k in info]  # a Pi has "Model"
    meminfo = Path("/proc/meminfo").read_text()
    mem_kib = int(meminfo.split("MemTotal:", 1)[1].split()[0])
    return {
        "cpu": " / ".join(names) or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "memory_mib": mem_kib // 1024,
        "load_average": load_average(),
    }


# ---- /proc readings of a process --------------------------------------------------------------
def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far, all threads (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_kib(pid: int, key: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split(f"{key}:", 1)[1].split()[0])


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` now (VmRSS), MiB."""
    return _status_kib(pid, "VmRSS") / 1024


def peak_rss_mib(pid: int) -> float:
    """Peak resident set size of ``pid`` over its life (VmHWM), MiB."""
    return _status_kib(pid, "VmHWM") / 1024


def pss_mib(pid: int) -> float:
    """Proportional set size of ``pid`` (shared pages divided among their users), MiB."""
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return int(rollup.split("\nPss:", 1)[1].split()[0]) / 1024


# ---- the stack ------------------------------------------------------------------------------
def write_config(path: Path, work: Path, broker_port: int, **sections: dict[str, Any]) -> Path:
    """Write the daemon's (and ``edgespeak serve``'s) TOML for a bench run; returns ``path``.

    Bench defaults: node ``bench``, the broker on ``broker_port``, pcm at 22050 Hz, the local
    server on a free port speaking espeak-ng, cache and state in ``work``, no rate limit.
    ``sections``: keys per section (``tts={"url": ...}``) added or replacing, values written
    as JSON (valid TOML for strings, numbers and booleans).
    """
    config: dict[str, dict[str, Any]] = {
        "mqtt": {"port": broker_port},
        "tts": {"format": "pcm", "sample_rate": 22050},
        "server": {"port": stack.free_port(), "voice": "en"},  # espeak-ng: see bench/piper.py
        "cache": {"dir": str(work / "cache")},
        "daemon": {"state_dir": str(work / "state")},
        "limits": {"rate": UNLIMITED_RATE},
    }
    for name, keys in sections.items():
        config[name] = config.get(name, {}) | keys
    lines = [f'node_id = "{NODE}"']
    for name, keys in config.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def start_daemon(
    config: Path, env: dict[str, str], log: Path, level: str = "WARNING"
) -> subprocess.Popen[bytes]:
    """``edgespeak run --config CONFIG`` with ``env``, stderr appended to ``log``."""
    return subprocess.Popen(
        stack.edgespeak_command("run", "--config", str(config), "--log-level", level),
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        env=env,
    )


async def wait_online(port: int, timeout_s: float = stack.STARTUP_S) -> None:
    """Return once the daemon published ``online`` on its availability topic.

    Raises TimeoutError after ``timeout_s`` seconds."""
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(f"{TOPIC}/availability", qos=1)
        async with asyncio.timeout(timeout_s):
            async for message in client.messages:
                if message.payload == b"online":
                    return


Seen = tuple[float, dict[str, Any]]  # arrival time (time.monotonic() s), event


class Events:
    """The daemon's events and availability changes, each with its arrival time."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.seen: list[Seen] = []
        self._changed = asyncio.Condition()

    async def subscribe(self) -> None:
        await self.client.subscribe(EVENT_TOPIC, qos=1)
        await self.client.subscribe(f"{TOPIC}/availability", qos=1)

    async def pump(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            if str(message.topic).endswith("/availability"):
                event = {"id": "availability", "state": message.payload.decode()}
            else:
                event = json.loads(message.payload)
            async with self._changed:
                self.seen.append((time.monotonic(), event))
                self._changed.notify_all()

    async def wait(self, ann_id: str, state: str, after: int = 0, timeout_s: float = 60) -> Seen:
        """The first event of ``ann_id`` from index ``after`` on in ``state`` (or a terminal
        one, which raises RuntimeError unless it is ``state``). TimeoutError after
        ``timeout_s`` seconds."""
        async with asyncio.timeout(timeout_s), self._changed:
            while True:
                for at, event in self.seen[after:]:
                    if event.get("id") == ann_id and event["state"] in {*TERMINAL, state}:
                        if event["state"] != state:
                            raise RuntimeError(f"{ann_id}: expected {state}, got {event}")
                        return at, event
                await self._changed.wait()

    async def until(self, done: Callable[[list[Seen]], bool], timeout_s: float = 60) -> None:
        """Return once ``done(every event seen so far)`` is true; TimeoutError after
        ``timeout_s`` seconds."""
        async with asyncio.timeout(timeout_s), self._changed:
            while not done(self.seen):
                await self._changed.wait()

    async def announce(self, ann_id: str, text: str, **fields: object) -> float:
        """Publish an announcement (QoS 1); the ``time.monotonic()`` just before the publish."""
        payload = json.dumps({"text": text, "id": ann_id, **fields})
        sent = time.monotonic()
        await self.client.publish(ANNOUNCE_TOPIC, payload, qos=1)
        return sent

    async def say(self, ann_id: str, text: str, timeout_s: float = 60) -> tuple[float, Seen]:
        """Announce and wait for ``finished``: (publish time, (arrival, finished event))."""
        after = len(self.seen)
        sent = await self.announce(ann_id, text)
        return sent, await self.wait(ann_id, "finished", after, timeout_s)

    def event(self, ann_id: str, state: str) -> dict[str, Any] | None:
        """The last event of ``ann_id`` in ``state`` seen so far, or None."""
        for _, event in reversed(self.seen):
            if event.get("id") == ann_id and event.get("state") == state:
                return event
        return None


@contextlib.asynccontextmanager
async def watching(port: int) -> AsyncIterator[Events]:
    """:class:`Events` of the daemon on the broker at ``port``, collected while inside (the
    publisher uses TCP_NODELAY, as the daemon does)."""
    async with aiomqtt.Client("127.0.0.1", port, socket_options=NODELAY) as client:
        events = Events(client)
        await events.subscribe()
        pump = asyncio.create_task(events.pump())
        try:
            yield events
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
