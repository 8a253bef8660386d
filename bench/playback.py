"""Playback quality on a real-time-paced ALSA device: underruns and CPU over a long stream, the
delay of an interruption, and the gap between a chime and its speech.

Real parts: Mosquitto, ``edgespeak run`` as a subprocess, ALSA whose ``default`` PCM is a
``file`` PCM (into /dev/null) over a private PulseAudio null sink (harness.stack), so writes are
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

Usage: ``python -m bench playback [--minutes 10] [-n 30] [--lead-ms 150] [--period-ms 20]
[--buffer-ms 80] [--stall-ms 0]`` (``--quick``: a 6 s stream, 3 trials). Runs (b) and (c),
then (a). Needs mosquitto, pulseaudio, pacat and espeak-ng.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import WSMsgType, web

from bench.common import (
    NODE,
    UNLIMITED_RATE,
    Events,
    Result,
    cpu_s,
    dist_row,
    peak_rss_mib,
    value_row,
    watching,
)
from edgespeak.config import AudioConfig
from edgespeak.sources.espeak import EspeakEngine
from edgespeak.wire import fish as fp
from harness import stack

NAME = "playback"
HELP = "paced device: underruns and CPU over a long stream, interruption delay, chime gap"
RATE = 22050  # Hz, s16le mono
CHUNK_FRAMES = RATE * 20 // 1000  # 20 ms per ``audio`` event
SPEECH = "The quick brown fox jumps over the lazy dog. Playback benchmark, one two three four."
STREAM = "This is the playback benchmark stream. It goes on for a long time."
WEATHER = f"Here is weather report number {{i}}. {'Tomorrow starts cloudy, then sunny. ' * 6}"
DOOR = "Someone is at the front door. This is trial {i}."
PARCEL = "A parcel has been delivered to the porch. This is trial {i}."
Env = dict[str, str]


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
        f'[server]\nport = {server}\nvoice = "en"\n[cache]\n{cache}\n[fallback]\nenabled = false\n'
        f'[daemon]\ndedup_window_s = 0\nstate_dir = "{path.parent / "state"}"\n'
        f'[limits]\nrate = "{UNLIMITED_RATE}"\n'
        f"[audio]\nperiod_ms = {args.period_ms}\nbuffer_ms = {args.buffer_ms}\n"
    )
    return path


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


async def play(args: argparse.Namespace, work: Path, broker: int, env: Env) -> Result:
    speech = b"".join([pcm async for pcm in EspeakEngine().synthesize(SPEECH)])
    async with watching(broker) as events:
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
    return {"stream": stream, "interruption": interruption, "chime": chime}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    audio = AudioConfig()
    parser.add_argument("--minutes", type=float, help="stream length (10; quick 0.1)")
    parser.add_argument("-n", type=int, help="trials for (b) and (c) (30; quick 3)")
    parser.add_argument("--lead-ms", type=float, default=150.0, help="provider lead (150)")
    parser.add_argument("--stall-ms", type=float, default=0.0, help="hold the stream once (0)")
    parser.add_argument("--period-ms", type=int, default=audio.period_ms)
    parser.add_argument("--buffer-ms", type=int, default=audio.buffer_ms)


def run(args: argparse.Namespace) -> Result:
    """Run (b), (c), then (a); the result with the table's rows."""
    args.minutes = args.minutes or (0.1 if args.quick else 10.0)
    args.n = args.n or (3 if args.quick else 30)
    if args.n < 2 or args.minutes <= 0:
        raise ValueError("-n must be at least 2 and --minutes above 0")
    work = Path(tempfile.mkdtemp(prefix="edgespeak-bench-playback-"))
    pulse = stack.PulseAudio(work)
    broker = stack.Mosquitto(stack.free_port(), work)
    alsa = stack.capture_alsa_conf(
        work / "asound.conf", Path("/dev/null"), pulse_server=pulse.server
    )
    env = stack.clean_env(**alsa)
    try:
        pulse.start()
        broker.start()
        results = asyncio.run(play(args, work, broker.port, env))
    except BaseException:
        print(f"playback bench: logs kept in {work}", file=sys.stderr)
        raise
    finally:
        broker.stop()
        pulse.stop()
    shutil.rmtree(work, ignore_errors=True)
    keys = ("minutes", "n", "lead_ms", "stall_ms", "period_ms", "buffer_ms")
    s, i, c = results["stream"], results["interruption"], results["chime"]
    rows = [
        value_row(f"{args.minutes:g} min stream: underruns (event / log)",
                  f"{s['underruns']} / {s['underruns_in_log']}"),
        value_row("stream: seconds played / sent", f"{s['seconds_played']} / {s['seconds_sent']}"),
        value_row("stream: daemon CPU, % of one core", s["cpu_percent_of_one_core"], "%"),
        value_row("stream: daemon peak RSS (VmHWM)", s["peak_rss_mib"], "MiB"),
        dist_row("high interrupts normal: high's ttfa_ms", i["high_ttfa_ms"]["ms"]),
        dist_row("high interrupts normal: normal cut after (daemon)",
                 i["interrupted_after_ms_daemon"]["ms"]),
        dist_row("chime then speech: chime_gap_ms", c["chime_gap_ms"]["ms"]),
    ]  # fmt: skip
    return {"rows": rows, "config": {k: getattr(args, k) for k in keys}} | results
