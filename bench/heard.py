"""Heard: publish → first sound a listener hears, with the default ``[audio]`` settings, on a
sink paced in real time, next to ``aplay`` spawned per utterance in the same run.

The stack: Mosquitto, ``edgespeak serve`` (espeak-ng) and ``edgespeak run`` with its default
config (``[audio]`` untouched: ``keep_open_s = 3``, 20 ms periods, 80 ms buffer, 8 ms fades),
ALSA ``default`` = ``type pulse`` on a private PulseAudio null sink (harness.stack.PulseAudio:
real time, no card). The sink's output (its monitor) is recorded all along with a time stamp on
every read (harness.monitor). An announcement is heard when its first sample at or above
``LEVEL`` (-30 dBFS) comes out, less where that sample lies in its WAV (espeak-ng starts with
~12 ms of near-silence): heard = that moment - ``time.monotonic()`` just before the publish.

edgespeak, cache hit (phrases cached first) and stream (a new text each time, synthesised by the
server), in three regimes: **idle** (the device drained: published ``keep_open_s`` + 1 s after
the previous announcement finished), **kept open** (0.3 s after the previous one finished: the
device is playing keep-open silence), **preempting** (a long cached announcement at volume 0.02,
below ``LEVEL``, is playing; 0.3 s after its ``playing`` event the measured one is published with
``priority: high``: it is heard after the interrupted one's fade-out). aplay: a subscriber in
this process runs ``aplay -q -D default WAV`` per message (bench/aplay.py) on a cached WAV;
aplay has no regimes (every utterance spawns it anew). The daemon's own ``ttfa_ms`` (MQTT
receipt → first frame handed to ALSA, the hand-over) is kept next to each figure.

Each round: aplay, idle, one source idle, the other kept open, the first kept open, cache
preempting, stream preempting, aplay, idle, the second idle (sources alternate between rounds).

``--cache-only``: rounds of aplay, a cache hit kept open and one idle (the regimes issue 17's
goal is about), for a shorter A/B run of two versions of the daemon.

``python -m bench heard [-n 12] [--cache-only]`` (rounds; quick 2). Needs mosquitto, pulseaudio,
pulseaudio-utils, alsa-utils, espeak-ng.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from bench.aplay import APLAY_TOPIC, AplaySubscriber
from bench.common import (
    PHRASES,
    Events,
    Result,
    dist_row,
    quantiles,
    ratio_row,
    rounded,
    start_daemon,
    tool_version,
    wait_online,
    watching,
    write_config,
)
from edgespeak.config import AudioConfig
from harness.monitor import MonitorRecorder, Recording
from harness.stack import LocalServer, Mosquitto, PulseAudio, clean_env, free_port, stop_process

NAME = "heard"
HELP = "publish -> first sound heard on a real-time sink, default settings, next to aplay"
LEVEL = 1000  # -30 dBFS: a sample this loud is the announcement's sound
KEPT_OPEN_S = 0.3  # published this long after the previous one finished
INTO_SPEECH_S = 0.3  # the interrupter is published this long after the long one began
QUIET = 0.02  # the interrupted announcement's volume: its peaks stay below LEVEL
LONG = "Here is the weather report. " + "Tomorrow starts cloudy, then sunny, with a breeze. " * 6
TIMEOUT_S = 60.0
Kind = Literal["aplay", "cache", "stream"]
Regime = Literal["idle", "kept open", "preempting", ""]
REGIMES: tuple[Regime, ...] = ("idle", "kept open", "preempting")


@dataclass
class Trial:
    """One measured announcement: ``sent`` is ``time.monotonic()`` before its publish; ``wav``
    the audio it played (for where its first loud sample lies)."""

    kind: Kind
    regime: Regime
    sent: float
    wav: Path
    ttfa_ms: float | None = None  # the daemon's hand-over (MQTT receipt -> writei)
    heard_ms: float | None = None

    @property
    def series(self) -> str:
        return "aplay" if self.kind == "aplay" else f"{self.kind}, {self.regime}"


def onset_s(wav: Path) -> float:
    """Seconds into ``wav`` (s16 mono) of its first sample at or above ``LEVEL``."""
    with wave.open(str(wav), "rb") as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    loud = np.flatnonzero(np.abs(np.frombuffer(pcm, "<i2").astype(np.int32)) >= LEVEL)
    if not len(loud):
        raise RuntimeError(f"{wav} has no sample at or above {LEVEL}")
    return float(loud[0]) / rate


class Bench:
    """Publishes announcements (daemon and aplay paths) and keeps the measured trials."""

    def __init__(self, events: Events, aplay: AplaySubscriber, cache: Path) -> None:
        self.events, self.aplay, self.cache = events, aplay, cache
        self.trials: list[Trial] = []
        self.last_done = 0.0  # time.monotonic() the daemon's last announcement finished
        self.count = 0

    def _id(self, what: str) -> str:
        self.count += 1
        return f"{what}-{self.count}"

    async def say(self, text: str, **fields: object) -> tuple[float, Path | None, float | None]:
        """Announce ``text`` and wait until it finished: (publish time, the WAV it left in the
        cache or None, its ``ttfa_ms``)."""
        ann_id, after = self._id("say"), len(self.events.seen)
        before = set(self.cache.glob("*.wav"))
        sent = await self.events.announce(ann_id, text, **fields)
        done_at, done = await self.events.wait(ann_id, "finished", after, TIMEOUT_S)
        self.last_done = done_at
        new = set(self.cache.glob("*.wav")) - before
        return sent, (new.pop() if len(new) == 1 else None), done.get("ttfa_ms")

    async def daemon(self, kind: Kind, regime: Regime, text: str, wav: Path | None) -> None:
        """One measured announcement of ``text`` (``wav``: its cached WAV, for a cache hit)."""
        if regime == "idle":
            idle_s = AudioConfig().keep_open_s + 1.0
            await asyncio.sleep(max(0.0, self.last_done + idle_s - time.monotonic()))
        elif regime == "kept open":
            await asyncio.sleep(max(0.0, self.last_done + KEPT_OPEN_S - time.monotonic()))
        if regime == "preempting":
            sent, new, ttfa = await self._preempting(text)
        else:
            sent, new, ttfa = await self.say(text)
        played = wav or new
        if played is None:
            raise RuntimeError(f"no WAV for {text!r}: a {kind} expected")
        if (kind == "cache") != (new is None):
            raise RuntimeError(f"{text!r} was {'not ' if kind == 'cache' else ''}a cache hit")
        self.trials.append(Trial(kind, regime, sent, played, ttfa))

    async def _preempting(self, text: str) -> tuple[float, Path | None, float | None]:
        long_id, after = self._id("long"), len(self.events.seen)
        await self.events.announce(long_id, LONG, volume=QUIET)
        await self.events.wait(long_id, "playing", after, TIMEOUT_S)
        await asyncio.sleep(INTO_SPEECH_S)
        result = await self.say(text, priority="high")
        await self.events.wait(long_id, "interrupted", after, TIMEOUT_S)
        return result

    async def spawn_aplay(self, wav: Path) -> None:
        """aplay per utterance on ``wav``, until it exits."""
        ann_id = self._id("aplay")
        fut: asyncio.Future[tuple[float, int]] = asyncio.get_running_loop().create_future()
        self.aplay.pending[ann_id] = fut
        payload = json.dumps({"id": ann_id, "wav": str(wav)})
        sent = time.monotonic()
        await self.events.client.publish(APLAY_TOPIC, payload, qos=1)
        async with asyncio.timeout(TIMEOUT_S):
            _, code = await fut
        if code != 0:
            raise RuntimeError(f"aplay exited with {code} on {wav}")
        self.trials.append(Trial("aplay", "", sent, wav))


async def run_rounds(
    port: int, env: dict[str, str], work: Path, rounds: int, cache_only: bool = False
) -> list[Trial]:
    """Fill the cache, then ``rounds`` rounds (module docstring); the measured trials."""
    await wait_online(port)
    with (work / "aplay.log").open("ab") as log:
        aplay = AplaySubscriber(port, env, log, [])
        aplay_task = asyncio.create_task(aplay.run())
        try:
            async with watching(port) as events:
                async with asyncio.timeout(10):
                    await aplay.ready.wait()
                bench = Bench(events, aplay, work / "cache")
                cached: list[tuple[str, Path]] = []
                for k, phrase in enumerate(PHRASES):  # fill the cache (not measured)
                    text = phrase.format(n=k)
                    _, wav, _ = await bench.say(text)
                    if wav is None:
                        raise RuntimeError(f"{text!r} was not cached")
                    cached.append((text, wav))
                if not cache_only:
                    await bench.say(LONG, volume=QUIET)
                for i in range(rounds):
                    await (cache_round if cache_only else one_round)(bench, i, cached)
        finally:
            aplay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await aplay_task
    return bench.trials


async def one_round(bench: Bench, i: int, cached: list[tuple[str, Path]]) -> None:
    def hit(j: int) -> tuple[str, Path]:
        return cached[(2 * i + j) % len(cached)]

    def fresh(regime: str) -> str:
        phrase = PHRASES[i % len(PHRASES)].format(n=i + 10)
        return f"{phrase} Round {i}, {regime}."

    async def measure(kind: Kind, regime: Regime) -> None:
        if kind == "cache":
            text, wav = hit(REGIMES.index(regime))
            await bench.daemon("cache", regime, text, wav)
        else:
            await bench.daemon("stream", regime, fresh(regime), None)

    first: Kind = "cache" if i % 2 == 0 else "stream"
    second: Kind = "stream" if i % 2 == 0 else "cache"
    await bench.spawn_aplay(hit(0)[1])
    await measure(first, "idle")
    await measure(second, "kept open")
    await measure(first, "kept open")
    await measure("cache", "preempting")
    await measure("stream", "preempting")
    await bench.spawn_aplay(hit(1)[1])
    await measure(second, "idle")


async def cache_round(bench: Bench, i: int, cached: list[tuple[str, Path]]) -> None:
    """aplay, then a cache hit kept open, then one idle (``--cache-only``)."""
    text, wav = cached[i % len(cached)]
    await bench.spawn_aplay(wav)
    await bench.daemon("cache", "kept open", text, wav)
    await bench.daemon("cache", "idle", text, wav)


def attribute(trials: list[Trial], recording: Recording) -> None:
    """Each trial's heard_ms: its first loud sample between its publish and the next one's,
    less that sample's place in its WAV. Raises RuntimeError when one was not heard."""
    for i, trial in enumerate(trials):
        end = trials[i + 1].sent if i + 1 < len(trials) else float("inf")
        heard = recording.first_above(LEVEL, after=trial.sent, before=end)
        if heard is None:
            raise RuntimeError(f"{trial.series} at {trial.sent:.3f} s was never heard")
        trial.heard_ms = (heard - onset_s(trial.wav) - trial.sent) * 1000


def pulse_alsa_conf(conf: Path, pulse: PulseAudio) -> dict[str, str]:
    """ALSA ``default`` = ``type pulse`` on ``pulse``'s server; the env selecting it."""
    conf.write_text(f'pcm.!default {{\n type pulse\n server "{pulse.server}"\n}}\n')
    return {"ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{conf}"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", type=int, help="rounds: measured figures per series (12; quick 2)")
    parser.add_argument(
        "--cache-only", action="store_true", help="only aplay and cache hits kept open and idle"
    )


def run(args: argparse.Namespace) -> Result:
    """Run the rounds; the result (rows, summary, samples). Raises RuntimeError."""
    args.n = args.n or (2 if args.quick else 12)
    if args.n < 2:
        raise ValueError("-n must be at least 2")
    for tool in ("aplay", "parec", "pulseaudio", "mosquitto"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise RuntimeError(f"{tool} is not installed")
    work = Path(tempfile.mkdtemp(prefix="edgespeak-bench-heard-"))
    pulse = PulseAudio(work)
    env = clean_env(**pulse_alsa_conf(work / "asound.conf", pulse))
    broker = Mosquitto(free_port(), work)
    config = write_config(work / "config.toml", work, broker.port)  # [audio]: the defaults
    server = LocalServer(config, work / "server.log", env)
    recorder = MonitorRecorder(pulse, work / "monitor.raw")
    daemon = None
    try:
        pulse.start()
        broker.start()
        server.start()
        daemon = start_daemon(config, env, work / "daemon.log")
        recorder.start()
        trials = asyncio.run(run_rounds(broker.port, env, work, args.n, args.cache_only))
        attribute(trials, recorder.stop())
    except BaseException:
        print(f"heard bench: logs kept in {work}", file=sys.stderr)
        raise
    finally:
        recorder.close()
        stop_process(daemon)
        server.stop()
        broker.stop()
        pulse.stop()
    shutil.rmtree(work, ignore_errors=True)
    return report(args, trials)


def report(args: argparse.Namespace, trials: list[Trial]) -> Result:
    """Rows (each series heard, its ratio to aplay), summary and samples."""
    names = ["aplay"] + [f"{kind}, {regime}" for kind in ("cache", "stream") for regime in REGIMES]
    names = [name for name in names if any(t.series == name for t in trials)]  # --cache-only
    heard = {name: [t.heard_ms or 0.0 for t in trials if t.series == name] for name in names}
    handover = {
        name: [t.ttfa_ms for t in trials if t.series == name and t.ttfa_ms is not None]
        for name in names[1:]
    }
    summary = {name: quantiles(values) for name, values in heard.items()}
    rows = [dist_row("aplay per utterance: publish -> first sound heard", heard["aplay"])]
    for name in names[1:]:
        label = name.replace("cache,", "cache hit,")
        rows += [
            dist_row(f"edgespeak {label}: publish -> first sound heard", heard[name]),
            ratio_row(f"edgespeak {label} / aplay", summary[name], summary["aplay"]),
        ]
    return {
        "rows": rows,
        "config": {
            "rounds": args.n,
            "cache_only": args.cache_only,
            "audio": AudioConfig().model_dump(),
            "level": LEVEL,
            "kept_open_after_s": KEPT_OPEN_S,
            "idle_after_s": AudioConfig().keep_open_s + 1.0,
            "interrupter_after_s": INTO_SPEECH_S,
            "sink": "ALSA default = type pulse on a PulseAudio null sink, its monitor recorded",
            "aplay": tool_version("aplay", "--version"),
        },
        "summary": summary,
        "handover_ttfa_ms": {k: quantiles(v) for k, v in handover.items() if len(v) >= 2},
        "ratio_over_aplay": {
            name: {k: round(summary[name][k] / summary["aplay"][k], 2) for k in ("p50", "p99")}
            for name in names[1:]
        },
        "samples": {name: rounded(values) for name, values in heard.items()},
    }
