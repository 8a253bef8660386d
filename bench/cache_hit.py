"""Cache-hit TTFA: edgespeak next to ``aplay`` spawned per announcement, same ALSA device, one run.

Path A (edgespeak): Mosquitto, ``edgespeak serve`` and ``edgespeak run`` on loopback. Each
phrase is announced once to fill the phrase cache (streamed, stored as a WAV in the cache dir);
every measured announcement after that is a cache hit.

Path B (aplay): what wyoming-satellite, Rhasspy and the small daemons do. A minimal subscriber
in this process (aiomqtt, same broker, its own topic ``bench/aplay/announce``, QoS 1, TCP_NODELAY
like the daemon) runs ``aplay -q -D default <WAV>`` per message with
``asyncio.create_subprocess_exec`` and waits for it to exit, one at a time. The WAV is the very
file the daemon stored for that phrase; the environment is the daemon's (same generated
asound.conf through ALSA_CONFIG_PATH, same ``default`` PCM).

Both paths are measured the same way, from outside: ``time.monotonic()`` just before the publish
→ the first bytes of that announcement coming out of the ALSA ``default`` PCM (bench/fifo.py).
Announcements run one at a time (A: until the daemon's ``finished`` event; B: until aplay exits),
A and B interleaved (ABBA order) so machine noise hits both alike, after a few unrecorded
warm-up pairs. The daemon's own ``ttfa_ms`` (MQTT receipt → first frame handed to ALSA, from
its ``playing`` event) is reported alongside, and for B the subscriber's receipt → first byte.
The daemon runs with ``[audio] keep_open_s = 0``: on this unpaced sink the keep-open silence
would come out at CPU speed and be counted as the announcement's bytes.

Where the first byte is seen. The ``file`` plugin copies frames into its own ring and write(2)s
only what exceeds one ALSA buffer. Seen with strace (alsa-lib 1.2.8): the daemon (22050 Hz, 20 ms
periods x 4 = 1764-frame buffer) writes 4096-frame chunks, so its first write(2) happens inside
its first writei; aplay (default 500 ms buffer = 11025 frames, 2756-frame periods) gets its first
write(2) inside its 5th writei, after four more loops of a 5.5 KB read from the page cache and an
unpaced writei: microseconds. Checked: giving aplay the daemon's buffer
(``--aplay-arg=--buffer-size=1764 --aplay-arg=--period-size=441``) moved its p50 by < 0.1 ms.
Arrivals are assigned to the announcement whose publish precedes them; before each publish the
FIFO is drained and a short gap left, and each announcement's byte count is checked against its
WAV (aplay pads the last period with silence), so none is misattributed. A ``file`` plugin pipe
spec (``file "|cmd"``) was not used: alsa-lib popen(3)s a shell for it on every PCM open, a cost
aplay would pay per announcement and the daemon once.

Caveats. aplay's start-up cost depends on the host: its ALSA configuration is parsed anew on
every spawn (on Debian, /etc/alsa/conf.d's PulseAudio hook loads libpulse and ~20 libraries
each time, even though ``default`` here never reaches PulseAudio) and on the CPU (a Pi is
slower than a PC at fork/exec and dynamic linking). The sink is unpaced, so this is start latency
only, not playback. p99 of n samples is interpolated between the largest ones: use ``-n 300``
(the full run's default) or more for a p99 worth quoting. ``--bare-alsa`` runs both paths on an
alsa.conf without its conf.d hooks, to see how much of aplay's cost is the host's configuration.

``python -m bench cache [-n 300] [--phrases 5] [--bare-alsa] [--aplay-arg ARG]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiomqtt

from bench.aplay import APLAY_TOPIC, AplaySubscriber, json_payload
from bench.common import (
    ANNOUNCE_TOPIC,
    EVENT_TOPIC,
    NODELAY,
    PHRASES,
    Result,
    alsa_lib_version,
    dist_row,
    quantiles,
    ratio_row,
    rounded,
    start_daemon,
    tool_version,
    wait_online,
    write_config,
)
from bench.fifo import Arrival, FifoReader, between
from edgespeak.base.events import TERMINAL
from harness.stack import (
    LocalServer,
    Mosquitto,
    capture_alsa_conf,
    clean_env,
    free_port,
    stop_process,
)

NAME = "cache"
HELP = "cache-hit TTFA, publish -> first byte out of ALSA, next to aplay per utterance"
TRIAL_TIMEOUT_S = 30.0
SYSTEM_ALSA_CONF = "/usr/share/alsa/alsa.conf"

PathName = Literal["edgespeak", "aplay"]


@dataclass(frozen=True)
class Phrase:
    """A cached phrase: its text and the daemon's cache WAV (``data_bytes`` of s16le mono PCM)."""

    text: str
    wav: Path
    rate_hz: int
    data_bytes: int


@dataclass
class Trial:
    """One announcement. Times are ``time.monotonic()`` seconds; ``nbytes`` came out of ALSA."""

    path: PathName
    phrase: Phrase
    ann_id: str
    measured: bool
    sent: float = 0.0
    received: float | None = None  # aplay subscriber's MQTT receipt
    daemon_ttfa_ms: float | None = None  # from the daemon's ``playing`` event
    first_byte: float | None = None
    nbytes: int = 0

    @property
    def ttfa_ms(self) -> float:
        """Milliseconds from publish to the first byte out of ALSA."""
        assert self.first_byte is not None
        return (self.first_byte - self.sent) * 1000


# ---- the run ---------------------------------------------------------------------------------
@dataclass
class Bench:
    """The publisher (both paths) and the daemon's event listener (path A)."""

    client: aiomqtt.Client
    fifo: FifoReader
    aplay: AplaySubscriber
    cache_dir: Path
    gap_s: float
    events: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    playing: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def pump(self) -> None:
        async for message in self.client.messages:
            event = json_payload(message.payload)
            ann_id = str(event.get("id"))
            if event.get("state") == "playing":
                self.playing[ann_id] = event
            elif event.get("state") in TERMINAL:
                fut = self.events.pop(ann_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(event)

    async def speak(self, text: str, ann_id: str) -> tuple[float, dict[str, Any]]:
        """Announce ``text`` to the daemon; (publish time, its final event) once it ended."""
        fut = asyncio.get_running_loop().create_future()
        self.events[ann_id] = fut
        payload = json.dumps({"text": text, "id": ann_id})
        sent = time.monotonic()
        await self.client.publish(ANNOUNCE_TOPIC, payload, qos=1)
        async with asyncio.timeout(TRIAL_TIMEOUT_S):
            event = await fut
        if event["state"] != "finished":
            raise RuntimeError(f"{ann_id} {event['state']}: {event.get('error')}")
        return sent, event

    async def fill(self, texts: list[str]) -> list[Phrase]:
        """Announce each text once (streamed); the cache WAV each one left behind."""
        phrases = []
        for k, text in enumerate(texts):
            before = set(self.cache_dir.glob("*.wav"))
            _, event = await self.speak(text, f"fill-{k}")
            new = set(self.cache_dir.glob("*.wav")) - before
            if event.get("source") != "stream" or len(new) != 1:
                raise RuntimeError(f"phrase {k} was not cached (event {event}, new files {new})")
            wav = new.pop()
            with wave.open(str(wav), "rb") as w:
                phrases.append(Phrase(text, wav, w.getframerate(), w.getnframes() * 2))
        await self.fifo.drained()
        return phrases

    async def trial(self, trial: Trial) -> None:
        """Run one announcement to its end, then wait until its audio is all read, and the gap."""
        if trial.path == "edgespeak":
            trial.sent, event = await self.speak(trial.phrase.text, trial.ann_id)
            if event.get("source") != "cache":
                raise RuntimeError(f"{trial.ann_id} was not a cache hit: {event}")
            playing = self.playing.pop(trial.ann_id, event)
            trial.daemon_ttfa_ms = float(playing["ttfa_ms"])
        else:
            fut = asyncio.get_running_loop().create_future()
            self.aplay.pending[trial.ann_id] = fut
            payload = json.dumps({"id": trial.ann_id, "wav": str(trial.phrase.wav)})
            trial.sent = time.monotonic()
            await self.client.publish(APLAY_TOPIC, payload, qos=1)
            async with asyncio.timeout(TRIAL_TIMEOUT_S):
                trial.received, code = await fut
            if code != 0:
                raise RuntimeError(f"aplay exited with {code} on {trial.phrase.wav}")
        await self.fifo.drained()
        await asyncio.sleep(self.gap_s)


async def run_bench(
    port: int, env: dict[str, str], fifo: FifoReader, work: Path, args: argparse.Namespace
) -> tuple[list[Phrase], list[Trial]]:
    """Fill the cache, then run the interleaved trials; every trial, in order."""
    await wait_online(port)
    with (work / "aplay.log").open("ab") as aplay_log:
        aplay = AplaySubscriber(port, env, aplay_log, list(args.aplay_arg))
        aplay_task = asyncio.create_task(aplay.run())
        async with aiomqtt.Client("127.0.0.1", port, socket_options=NODELAY) as client:
            await client.subscribe(EVENT_TOPIC, qos=1)
            bench = Bench(client, fifo, aplay, work / "cache", args.gap_ms / 1000)
            pump = asyncio.create_task(bench.pump())
            try:
                async with asyncio.timeout(10):
                    await aplay.ready.wait()
                texts = [PHRASES[k % len(PHRASES)].format(n=k) for k in range(args.phrases)]
                phrases = await bench.fill(texts)
                trials = []
                for i in range(args.warmup + args.n):
                    order: tuple[PathName, PathName] = ("edgespeak", "aplay")
                    for path in order if i % 2 == 0 else order[::-1]:  # ABBA
                        trial = Trial(
                            path, phrases[i % len(phrases)], f"{path}-{i}", i >= args.warmup
                        )
                        await bench.trial(trial)
                        trials.append(trial)
            finally:
                for task in (pump, aplay_task):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
    return phrases, trials


def attribute(trials: list[Trial], arrivals: list[Arrival]) -> None:
    """Give each trial the arrivals between its publish and the next one's; check byte counts.

    Raises RuntimeError when a trial's bytes do not match its WAV (aplay may add up to one
    period of silence, allowed up to one second of audio).
    """
    for i, trial in enumerate(trials):
        end = trials[i + 1].sent if i + 1 < len(trials) else float("inf")
        trial.first_byte, trial.nbytes = between(arrivals, trial.sent, end)
        expected = trial.phrase.data_bytes
        slack = trial.phrase.rate_hz * 2 if trial.path == "aplay" else 0
        if not expected <= trial.nbytes <= expected + slack:
            raise RuntimeError(
                f"{trial.ann_id}: {trial.nbytes} bytes out of ALSA, WAV has {expected}"
            )


def bare_alsa_conf(path: Path) -> Path:
    """Write to ``path`` the system alsa.conf without the conf.d directories its load hook
    reads (alsa-plugins' PulseAudio, JACK, rate-converter… configs); returns ``path``."""
    lines = Path(SYSTEM_ALSA_CONF).read_text().splitlines(keepends=True)
    path.write_text("".join(ln for ln in lines if not ln.strip().endswith('/conf.d"')))
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", type=int, help="measured announcements per path (300; quick 10)")
    parser.add_argument("--phrases", type=int, default=5, help="distinct cached phrases (5)")
    parser.add_argument("--warmup", type=int, default=2, help="unrecorded A/B pairs first (2)")
    parser.add_argument("--gap-ms", type=float, default=20.0, help="pause after each, ms (20)")
    parser.add_argument(
        "--bare-alsa",
        action="store_true",
        help="both paths: alsa.conf without its conf.d hooks (no PulseAudio/plugin configs)",
    )
    parser.add_argument(
        "--aplay-arg", action="append", default=[], help="extra aplay argument (repeatable)"
    )


def run(args: argparse.Namespace) -> Result:
    """Run both paths interleaved; the result (rows for the table, summary, samples).

    Raises RuntimeError when aplay is missing or an announcement goes wrong."""
    args.n = args.n or (10 if args.quick else 300)
    if args.n < 2 or args.phrases < 1:
        raise ValueError("-n must be at least 2 and --phrases at least 1")
    if shutil.which("aplay") is None:
        raise RuntimeError("aplay is not installed (apt-get install alsa-utils)")
    work = Path(tempfile.mkdtemp(prefix="edgespeak-bench-cache-"))
    fifo = FifoReader(work / "alsa.fifo")
    env = clean_env(**capture_alsa_conf(work / "asound.conf", fifo.path))
    if args.bare_alsa:
        env["ALSA_CONFIG_PATH"] = f"{bare_alsa_conf(work / 'alsa.conf')}:{work / 'asound.conf'}"
    broker = Mosquitto(free_port(), work)
    config = write_config(
        work / "config.toml", work, broker.port, audio={"device": "default", "keep_open_s": 0}
    )
    server = LocalServer(config, work / "server.log", env)
    daemon: subprocess.Popen[bytes] | None = None
    try:
        broker.start()
        server.start()
        daemon = start_daemon(config, env, work / "daemon.log")
        phrases, trials = asyncio.run(run_bench(broker.port, env, fifo, work, args))
    except BaseException:
        if daemon is not None and daemon.poll() is not None:
            print(f"edgespeak run exited with {daemon.returncode}: see {work / 'daemon.log'}")
        print(f"cache bench: logs kept in {work}")
        raise
    finally:
        stop_process(daemon)
        server.stop()
        broker.stop()
        arrivals = fifo.stop()
    attribute(trials, arrivals)
    shutil.rmtree(work, ignore_errors=True)
    return report(args, phrases, [t for t in trials if t.measured])


def report(args: argparse.Namespace, phrases: list[Phrase], trials: list[Trial]) -> Result:
    """Rows, summary and samples of the measured trials."""
    series = {
        "edgespeak_publish_to_alsa_ms": [t.ttfa_ms for t in trials if t.path == "edgespeak"],
        "aplay_publish_to_alsa_ms": [t.ttfa_ms for t in trials if t.path == "aplay"],
        "edgespeak_daemon_ttfa_ms": [
            t.daemon_ttfa_ms for t in trials if t.daemon_ttfa_ms is not None
        ],
        "aplay_receipt_to_alsa_ms": [
            (t.first_byte - t.received) * 1000
            for t in trials
            if t.received is not None and t.first_byte is not None
        ],
    }
    a = quantiles(series["edgespeak_publish_to_alsa_ms"])
    b = quantiles(series["aplay_publish_to_alsa_ms"])
    seconds = sum(p.data_bytes for p in phrases) / 2 / phrases[0].rate_hz / len(phrases)
    return {
        "rows": [
            dist_row(
                "edgespeak: publish -> first byte out of ALSA",
                series["edgespeak_publish_to_alsa_ms"],
            ),
            dist_row(
                "aplay per utterance: publish -> first byte out of ALSA",
                series["aplay_publish_to_alsa_ms"],
            ),
            ratio_row("aplay / edgespeak", b, a),
            dist_row(
                "edgespeak daemon ttfa_ms (MQTT receipt -> writei)",
                series["edgespeak_daemon_ttfa_ms"],
            ),
        ],
        "config": {
            "n": args.n,
            "warmup_pairs": args.warmup,
            "gap_ms": args.gap_ms,
            "aplay_args": ["-q", "-D", "default", *args.aplay_arg],
            "bare_alsa": args.bare_alsa,
            "format": f"{phrases[0].rate_hz} Hz mono s16le WAV from the edgespeak cache",
            "device": "ALSA default = plug > file > null (unpaced), first byte at the FIFO",
            "phrases": [
                {"text": p.text, "seconds": round(p.data_bytes / 2 / p.rate_hz, 3)} for p in phrases
            ],
            "mean_phrase_s": round(seconds, 2),
        },
        "summary": {key: quantiles(values) for key, values in series.items()},
        "ratio_aplay_over_edgespeak": {k: round(b[k] / a[k], 2) for k in ("p50", "p99")},
        "samples": {key: rounded(values) for key, values in series.items()},
        "versions": {
            "alsa_lib": alsa_lib_version(),
            "aplay": tool_version("aplay", "--version"),
            "mosquitto": tool_version("mosquitto", "-h"),
        },
    }
