"""Playback quality on a real-time-paced ALSA device: underruns and CPU over a long stream, the
delay of an interruption, and the gap between a chime and its speech.

Real parts: Mosquitto, ``edgespeak run`` as a subprocess, ALSA whose ``default`` PCM is a
``file`` PCM (into /dev/null) over a private PulseAudio null sink (edgespeak.stack), so writes are
paced by the sink's clock as by a sound card. Numbers are the daemon's own MQTT events, plus /proc.

(a) Stream: this process serves the Fish live protocol (aiohttp) and answers the session, from
its first ``flush`` on as ``edgespeak serve`` does, with ``--minutes`` of real espeak-ng speech
(rendered once, repeated), s16le mono 22050 Hz, in 20 ms ``audio`` events paced by the monotonic
clock ``--lead-ms`` ahead of real time, then ``finish``; cache and fallback off. Printed:
underruns (``finished`` event; the daemon log's ALSA underrun lines), seconds played vs sent,
the daemon's user+sys CPU seconds (/proc/<pid>/stat) from publish to ``finished`` and as % of
one core, its peak RSS (VmHWM), and how late the provider sent at worst (near the lead: the
bench fell behind). ``--stall-ms`` holds the stream once, halfway, then sends what it owes at
once (a network hiccup): a check that the device reports underruns at all.

(b) Interruption, provider ``edgespeak serve`` (espeak-ng): a long ``normal`` announcement, and
once its ``playing`` event is in, a ``high`` one. p50/p99 over ``-n`` trials of the high one's
``ttfa_ms`` (MQTT receipt → first frame handed to ALSA) and of the time until the normal one
reported ``interrupted`` (daemon: its ``at`` minus the high one's ``received``, ms resolution;
publisher: publish → event in). (c) Chime: ``-n`` announcements with ``"chime": "doorbell"``
and distinct texts (each synthesised): p50/p99 of ``chime_gap_ms`` from ``finished`` (silence
played between chime and speech) and of ``ttfa_ms`` (to the chime's first frame).

Usage: ``python -m bench.playback [--minutes 10] [-n 30] [--lead-ms 150] [--period-ms 20]
[--buffer-ms 80] [--stall-ms 0] [--out bench/results-playback.json]`` (fractional minutes for a
quick run). Runs (b) and (c), then (a); prints the machine, the config and the numbers, and
writes them as JSON. Needs mosquitto, pulseaudio, pacat and espeak-ng.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
from aiohttp import WSMsgType, web

from edgespeak import stack
from edgespeak.config import AudioConfig
from edgespeak.engines.espeak import EspeakEngine
from edgespeak.tts import fish_protocol as fp

NODE = "bench"
TOPIC = f"edgespeak/{NODE}"
RATE = 22050  # Hz, s16le mono
CHUNK_FRAMES = RATE * 20 // 1000  # 20 ms per ``audio`` event
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
DEFAULT_OUT = Path(__file__).resolve().parent / "results-playback.json"
SPEECH = "The quick brown fox jumps over the lazy dog. Playback benchmark, one two three four."
STREAM = "This is the playback benchmark stream. It goes on for a long time."
WEATHER = f"Here is weather report number {{i}}. {'Tomorrow starts cloudy, then sunny. ' * 6}"
DOOR = "Someone is at the front door. This is trial {i}."
PARCEL = "A parcel has been delivered to the porch. This is trial {i}."
TERMINAL = {"finished", "failed", "interrupted", "expired"}
Seen = tuple[float, dict[str, Any]]  # arrival time (monotonic s), event
Result = dict[str, Any]
Env = dict[str, str]


class Events:
    """The daemon's events and availability changes, each with its arrival time (monotonic)."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.seen: list[Seen] = []
        self._changed = asyncio.Condition()

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

    async def wait(self, ann_id: str, state: str, after: int, timeout_s: float = 60) -> Seen:
        """The first event of ``ann_id`` from index ``after`` on in ``state`` (or a terminal
        one, which raises RuntimeError unless it is ``state``)."""
        async with asyncio.timeout(timeout_s), self._changed:
            while True:
                for at, event in self.seen[after:]:
                    if event.get("id") == ann_id and event["state"] in TERMINAL | {state}:
                        if event["state"] != state:
                            raise RuntimeError(f"{ann_id}: expected {state}, got {event}")
                        return at, event
                await self._changed.wait()

    async def announce(self, ann_id: str, text: str, **fields: object) -> float:
        """Publish an announcement; returns the monotonic time just before the publish."""
        sent = time.monotonic()
        payload = json.dumps({"text": text, "id": ann_id, **fields})
        await self.client.publish(f"{TOPIC}/announce", payload, qos=1)
        return sent


class PacedProvider:
    """Fish live protocol: every session gets ``seconds`` of ``speech`` (s16le mono, RATE Hz,
    repeated) in CHUNK_FRAMES ``audio`` events ``lead_s`` ahead of real time, from its first
    ``flush`` on, then ``finish`` once ``stop`` came and all is sent."""

    def __init__(self, speech: bytes, seconds: float, lead_s: float, stall_s: float) -> None:
        self.speech, self.period = speech * 2, len(speech)  # doubled: a chunk may wrap around
        self.seconds, self.lead_s, self.stall_s = seconds, lead_s, stall_s
        self.sent_s = 0.0
        self.max_late_ms = 0.0  # the latest a chunk went out behind its schedule

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        tasks: set[asyncio.Task[None]] = set()
        stream: asyncio.Task[None] | None = None
        try:
            async for msg in ws:  # read all along, so the daemon's pings get their pongs
                if msg.type != WSMsgType.BINARY:
                    continue
                event = fp.decode(msg.data).event
                if event in ("flush", "stop") and stream is None:
                    stream = asyncio.create_task(self._stream(ws))
                    tasks.add(stream)
                if event == "stop" and stream is not None:
                    tasks.add(asyncio.create_task(self._finish(ws, stream)))
                    stream = None
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return ws

    async def _stream(self, ws: web.WebSocketResponse) -> None:
        total, sent = round(self.seconds * RATE), 0
        start = origin = time.monotonic()
        while sent < total:
            if self.stall_s and sent < total // 2 <= sent + CHUNK_FRAMES:
                await asyncio.sleep(self.stall_s)  # --stall-ms: hold once, then catch up
                origin = time.monotonic()
            due = max(origin, start + sent / RATE - self.lead_s)
            if (delay := due - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            self.max_late_ms = max(self.max_late_ms, (time.monotonic() - due) * 1000)
            frames = min(CHUNK_FRAMES, total - sent)
            offset = sent * 2 % self.period
            await ws.send_bytes(fp.audio(self.speech[offset : offset + frames * 2]))
            sent += frames
        self.sent_s = sent / RATE

    async def _finish(self, ws: web.WebSocketResponse, stream: asyncio.Task[None]) -> None:
        await stream
        await ws.send_bytes(fp.finish("stop"))


@contextlib.asynccontextmanager
async def serving(provider: PacedProvider) -> AsyncIterator[str]:
    """Serve ``provider`` at the Fish live path on loopback; yields its ws:// URL."""
    app = web.Application()
    app.router.add_get(fp.LIVE_PATH, provider.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = stack.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"ws://127.0.0.1:{port}{fp.LIVE_PATH}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def daemon(config: Path, env: Env, events: Events, log: Path) -> AsyncIterator[int]:
    """``edgespeak run`` with ``config``, once it is online; yields its pid."""
    after = len(events.seen)
    command = stack.edgespeak_command("run", "--config", str(config), "--log-level", "WARNING")
    proc = await asyncio.to_thread(subprocess.Popen, command, stderr=log.open("ab"), env=env)
    try:
        await events.wait("availability", "online", after, timeout_s=20)
        yield proc.pid
    finally:
        await asyncio.to_thread(stack.stop_process, proc)


def write_config(path: Path, args: argparse.Namespace, port: int, server: int, **tts: str) -> Path:
    """The daemon's (and ``edgespeak serve``'s) TOML; ``tts``: extra ``[tts]`` keys (``url``:
    this process's provider, then the cache is off too)."""
    extra = "".join(f'{key} = "{value}"\n' for key, value in tts.items())
    cache = "enabled = false" if tts else f'dir = "{path.parent / "cache"}"'
    path.write_text(
        f'node_id = "{NODE}"\n[mqtt]\nport = {port}\n'
        f'[tts]\n{extra}format = "pcm"\nsample_rate = {RATE}\nfirst_audio_timeout_ms = 30000\n'
        f"[server]\nport = {server}\n[cache]\n{cache}\n[fallback]\nenabled = false\n"
        f"[daemon]\ndedup_window_s = 0\n"
        f"[audio]\nperiod_ms = {args.period_ms}\nbuffer_ms = {args.buffer_ms}\n"
    )
    return path


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far, all threads (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """Peak resident set size of ``pid`` (VmHWM), MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:", 1)[1].split()[0]) / 1024


def summary(values: list[float]) -> Result:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(q[49], 1), "p99": round(q[98], 1), "max": max(values), "ms": values}


async def stream_round(events: Events, pid: int, provider: PacedProvider, log: Path) -> Result:
    after, cpu0 = len(events.seen), cpu_s(pid)
    sent = await events.announce("stream", STREAM)
    await events.wait("stream", "playing", after)
    done_at, done = await events.wait("stream", "finished", after, provider.seconds + 120)
    wall_s, cpu = done_at - sent, cpu_s(pid) - cpu0
    return {
        "seconds_sent": provider.sent_s,
        "seconds_played": done.get("duration_s"),
        "underruns": done.get("underruns"),
        "underruns_in_log": (await asyncio.to_thread(log.read_bytes)).count(b"ALSA underrun"),
        "cpu_s": round(cpu, 2),
        "wall_s": round(wall_s, 2),
        "cpu_percent_of_one_core": round(100 * cpu / wall_s, 2),
        "peak_rss_mib": round(peak_rss_mib(pid), 1),
        "provider_max_late_ms": round(provider.max_late_ms, 1),
    }


async def interruption_round(events: Events, n: int) -> Result:
    ttfa, daemon_ms, seen_ms = [], [], []
    for i in range(n):
        normal, high, after = f"weather-{i}", f"door-{i}", len(events.seen)
        await events.announce(normal, WEATHER.format(i=i))
        await events.wait(normal, "playing", after)
        sent = await events.announce(high, DOOR.format(i=i), priority="high")
        _, received = await events.wait(high, "received", after)
        cut_at, cut = await events.wait(normal, "interrupted", after)
        _, playing = await events.wait(high, "playing", after)
        await events.wait(high, "finished", after)
        ttfa.append(playing["ttfa_ms"])
        daemon_ms.append(round((cut["at"] - received["at"]) * 1000, 1))
        seen_ms.append(round((cut_at - sent) * 1000, 1))
    return {
        "high_ttfa_ms": summary(ttfa),
        "interrupted_after_ms_daemon": summary(daemon_ms),
        "interrupted_after_ms_publisher": summary(seen_ms),
    }


async def chime_round(events: Events, n: int) -> Result:
    gaps, ttfa, sources = [], [], set()
    for i in range(n):
        ann_id, after = f"chime-{i}", len(events.seen)
        await events.announce(ann_id, PARCEL.format(i=i), chime="doorbell")
        _, playing = await events.wait(ann_id, "playing", after)
        _, done = await events.wait(ann_id, "finished", after)
        if done.get("chime_gap_ms") is None:
            raise RuntimeError(f"{ann_id}: no chime_gap_ms in {done}")
        gaps.append(done["chime_gap_ms"])
        ttfa.append(playing["ttfa_ms"])
        sources.add(done["source"])
    return {
        "chime_gap_ms": summary(gaps),
        "chime_ttfa_ms": summary(ttfa),
        "sources": sorted(sources),
    }


async def run(args: argparse.Namespace, work: Path, broker: int, env: Env) -> Result:
    speech = b"".join([pcm async for pcm in EspeakEngine().synthesize(SPEECH)])
    async with aiomqtt.Client("127.0.0.1", broker, socket_options=NODELAY) as client:
        await client.subscribe(f"{TOPIC}/event", qos=1)
        await client.subscribe(f"{TOPIC}/availability", qos=1)
        events = Events(client)
        pump = asyncio.create_task(events.pump())
        try:
            config = write_config(work / "espeak.toml", args, broker, stack.free_port())
            server = stack.LocalServer(config, work / "server.log", env)
            try:
                await asyncio.to_thread(server.start)
                async with daemon(config, env, events, work / "daemon-espeak.log"):
                    interruption = await interruption_round(events, args.n)
                    chime = await chime_round(events, args.n)
            finally:
                server.stop()
            lead_s, stall_s = args.lead_ms / 1000, args.stall_ms / 1000
            provider = PacedProvider(speech, args.minutes * 60, lead_s, stall_s)
            async with serving(provider) as url:
                stream_toml = work / "stream.toml"
                config = write_config(stream_toml, args, broker, stack.free_port(), url=url)
                log = work / "daemon-stream.log"
                async with daemon(config, env, events, log) as pid:
                    stream = await stream_round(events, pid, provider, log)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
    return {"stream": stream, "interruption": interruption, "chime": chime}


def machine() -> Result:
    info: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    names = [info[k] for k in ("model name", "Model") if k in info]  # a Pi has "Model"
    return {
        "cpu": " / ".join(names) or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def report(results: Result) -> None:
    m, c = results["machine"], results["config"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['arch']}, Linux {m['kernel']}")
    print(f"config: {', '.join(f'{k} {v:g}' for k, v in c.items())}; s16le mono {RATE} Hz, "
          "ALSA file PCM over a PulseAudio null sink (paced in real time)")  # fmt: skip
    print("(a) stream")
    for key, value in results["stream"].items():
        print(f"    {key:<28} {value}")
    print(f"{'(b) interruption, (c) chime, ms':<34} {'p50':>7} {'p99':>7} {'max':>7}")
    for part in ("interruption", "chime"):
        for key, q in results[part].items():
            if isinstance(q, dict):
                print(f"    {key:<30} {q['p50']:7.1f} {q['p99']:7.1f} {q['max']:7.1f}")


def main() -> None:
    audio = AudioConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="stream length (default 10)")
    parser.add_argument("-n", type=int, default=30, help="trials for (b) and (c) (default 30)")
    parser.add_argument("--lead-ms", type=float, default=150.0, help="provider lead (150)")
    parser.add_argument("--stall-ms", type=float, default=0.0, help="hold the stream once (0)")
    parser.add_argument("--period-ms", type=int, default=audio.period_ms)
    parser.add_argument("--buffer-ms", type=int, default=audio.buffer_ms)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.n < 2 or args.minutes <= 0:
        parser.error("-n must be at least 2 and --minutes above 0")
    work = Path(tempfile.mkdtemp(prefix="edgespeak-playback-"))
    pulse = stack.PulseAudio(work)
    broker = stack.Mosquitto(stack.free_port(), work)
    alsa = stack.capture_alsa_conf(
        work / "asound.conf", Path("/dev/null"), pulse_server=pulse.server
    )
    env = stack.clean_env(**alsa)
    try:
        pulse.start()
        broker.start()
        results = asyncio.run(run(args, work, broker.port, env))
    except BaseException:
        print(f"edgespeak-playback: logs kept in {work}", file=sys.stderr)
        raise
    finally:
        broker.stop()
        pulse.stop()
    shutil.rmtree(work, ignore_errors=True)
    keys = ("minutes", "n", "lead_ms", "stall_ms", "period_ms", "buffer_ms")
    results |= {"machine": machine(), "config": {k: getattr(args, k) for k in keys}}
    report(results)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
