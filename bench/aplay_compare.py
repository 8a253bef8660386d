"""Cache-hit TTFA: edgespeak next to ``aplay`` spawned per announcement, same ALSA device, one run.

Path A (edgespeak): Mosquitto, ``edgespeak serve`` and ``edgespeak run`` on loopback, as in
bench/latency.py. Each phrase is announced once to fill the phrase cache (streamed, stored as a
WAV in the cache dir); every measured announcement after that is a cache hit.

Path B (aplay): what wyoming-satellite, Rhasspy and the small daemons do. A minimal subscriber
in this process (aiomqtt, same broker, its own topic ``bench/aplay/announce``, QoS 1, TCP_NODELAY
like the daemon) runs ``aplay -q -D default <WAV>`` per message with
``asyncio.create_subprocess_exec`` and waits for it to exit, one at a time. The WAV is the very
file the daemon stored for that phrase; the environment is the daemon's (same generated
asound.conf through ALSA_CONFIG_PATH, same ``default`` PCM).

Both paths are measured the same way, from outside: ``time.monotonic()`` just before the publish
→ the first bytes of that announcement coming out of the ALSA ``default`` PCM. Announcements run
one at a time (A: until the daemon's ``finished`` event; B: until aplay exits), A and B
interleaved (ABBA order) so machine noise hits both alike, after a few unrecorded warm-up pairs.
The daemon's own ``ttfa_ms`` (MQTT receipt → first frame handed to ALSA, from its ``playing``
event) is reported alongside, and for B the subscriber's receipt → first byte.

How "first bytes out of ALSA" is observed. ``default`` is ``plug`` → ``file`` → ``null``
(edgespeak.stack.capture_alsa_conf); ``null`` is not paced, so the whole utterance is accepted at
CPU speed. The ``file`` plugin does not write each ``snd_pcm_writei`` through: it copies frames
into its own ring and write(2)s only what exceeds one ALSA buffer (``wbuf_used > buffer_bytes``
in alsa-lib's pcm_file.c), flushing the rest on drain/drop. Seen with strace (alsa-lib 1.2.8):
the daemon (22050 Hz, 20 ms periods x 4 = 1764-frame buffer) writes 4096-frame chunks, so its
first write(2) happens inside its first writei; aplay (default 500 ms buffer = 11025 frames,
2756-frame periods) gets its first write(2) inside its 5th writei, after four more loops of a
5.5 KB read from the page cache and an unpaced writei: microseconds. So the observation point is
"first byte past one ALSA buffer", which on this unpaced sink is the first writei plus a few
microseconds for aplay and plus nothing for the daemon. Checked: giving aplay the daemon's buffer
(``--aplay-arg=--buffer-size=1764 --aplay-arg=--period-size=441``) moved its p50 by < 0.1 ms.

The ``file`` plugin's output is a FIFO, read by a separate process blocked in select(2) (not
a thread: woken by the data, a thread would first have to take the GIL from the event loop); it
stamps each arrival with ``time.monotonic()`` (CLOCK_MONOTONIC, comparable across processes), so
the first byte is timed to the wake-up latency (tens of µs), without burning a core. Polling a
capture file's size was the alternative: it quantizes to the poll interval (0.2-0.5 ms), a
spinning poller takes CPU from the daemon and aplay on a small machine, and a long-lived writer
(the daemon keeps its PCM open) and a truncating one (aplay reopens it per run) make the size
jump. Arrivals are assigned to the announcement whose publish precedes them; before each publish
the FIFO is drained (FIONREAD = 0) and a short gap left, and each announcement's byte count is
checked against its WAV (aplay pads the last period with silence), so none is misattributed.
A ``file`` plugin pipe spec (``file "|cmd"``) was not used: alsa-lib popen(3)s a shell for it on
every PCM open, a cost aplay would pay per announcement and the daemon once.

Caveats. aplay's start-up cost depends on the host: its ALSA configuration is parsed anew on
every spawn (on Debian, /etc/alsa/conf.d's PulseAudio hook loads libpulse and ~20 libraries
each time, even though ``default`` here never reaches PulseAudio) and on the CPU (a Pi is
slower than a PC at fork/exec and dynamic linking). The sink is unpaced, so this is start latency
only, not playback. With the default ``-n 50``, p99 is interpolated between the two largest
samples: use ``-n 300`` or more for a p99 worth quoting. ``--bare-alsa`` runs both paths on
an alsa.conf without its conf.d hooks, to see how much of aplay's cost is the host's
configuration.

Usage: ``python -m bench.aplay_compare [-n 50] [--out bench/results-aplay.json]``. Prints
p50/p90/p99 in milliseconds per path and the ratio aplay/edgespeak of p50 and p99; writes the
samples and summary as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import ctypes
import fcntl
import json
import multiprocessing
import os
import platform
import select
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
import wave
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any, Literal

import aiomqtt

from bench.latency import PHRASES, percentiles, wait_online
from edgespeak.stack import (
    LocalServer,
    Mosquitto,
    capture_alsa_conf,
    clean_env,
    edgespeak_command,
    free_port,
    stop_process,
)

NODE = "bench"  # bench.latency.wait_online listens for this node id
ANNOUNCE_TOPIC = f"edgespeak/{NODE}/announce"
EVENT_TOPIC = f"edgespeak/{NODE}/event"
APLAY_TOPIC = "bench/aplay/announce"
PIPE_BYTES = 1 << 20  # FIFO capacity asked for, and read size, bytes
TRIAL_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 5.0
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
SYSTEM_ALSA_CONF = "/usr/share/alsa/alsa.conf"
DEFAULT_OUT = Path(__file__).resolve().parent / "results-aplay.json"

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


# ---- the FIFO reader (a separate process) -----------------------------------------------------
def _read_fifo(path: str, conn: Connection) -> None:
    """Stamp every arrival on the FIFO at ``path`` until told to stop; send back the list of
    (``time.monotonic()`` seconds, bytes) pairs."""
    fd = os.open(path, os.O_RDWR)  # RDWR: the open does not block and no EOF between writers
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)  # writers are never held back by us
    arrivals: list[tuple[float, int]] = []
    conn.send("ready")
    ctl = conn.fileno()
    while True:
        ready, _, _ = select.select([fd, ctl], [], [])
        now = time.monotonic()
        if fd in ready:
            arrivals.append((now, len(os.read(fd, PIPE_BYTES))))
        elif ctl in ready:
            conn.recv()
            break
    conn.send(arrivals)


class FifoReader:
    """The FIFO the ALSA ``file`` plugin writes to, and the process timing what comes out."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        ctx = multiprocessing.get_context("fork")  # forked before any thread or event loop
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_read_fifo, args=(str(path), child), daemon=True)
        self._proc.start()
        if not self._conn.poll(10) or self._conn.recv() != "ready":
            raise RuntimeError("the FIFO reader did not start")
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)  # only to ask FIONREAD

    def unread(self) -> int:
        """Bytes in the FIFO not read yet."""
        return int(struct.unpack("i", fcntl.ioctl(self._fd, termios.FIONREAD, b"\0" * 4))[0])

    async def drained(self) -> None:
        """Return once the reader has taken everything written so far (polled every 1 ms).

        Raises TimeoutError after DRAIN_TIMEOUT_S seconds.
        """
        for _ in range(int(DRAIN_TIMEOUT_S * 1000)):
            if not self.unread():
                return
            await asyncio.sleep(0.001)
        raise TimeoutError(f"the FIFO reader left {self.unread()} bytes unread")

    def stop(self) -> list[tuple[float, int]]:
        """Stop the reader; every arrival, oldest first."""
        self._conn.send("stop")
        arrivals: list[tuple[float, int]] = self._conn.recv()
        self._proc.join(5)
        os.close(self._fd)
        return arrivals


# ---- the aplay-per-announcement subscriber ----------------------------------------------------
@dataclass
class AplaySubscriber:
    """Path B: on each message ``{"id", "wav"}``, ``aplay -q -D default WAV``, wait for its exit."""

    port: int
    env: dict[str, str]
    stderr: IO[bytes]
    extra_args: list[str]
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    pending: dict[str, asyncio.Future[tuple[float, int]]] = field(default_factory=dict)

    async def run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, socket_options=NODELAY) as client:
            await client.subscribe(APLAY_TOPIC, qos=1)
            self.ready.set()
            async for message in client.messages:
                received = time.monotonic()
                request = _json(message.payload)
                proc = await asyncio.create_subprocess_exec(
                    "aplay", "-q", "-D", "default", *self.extra_args, request["wav"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr,
                    env=self.env,
                )  # fmt: skip
                code = await proc.wait()
                fut = self.pending.pop(request["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result((received, code))


def _json(payload: object) -> dict[str, Any]:
    if not isinstance(payload, bytes | bytearray):
        raise TypeError(f"unexpected MQTT payload {payload!r}")
    body: dict[str, Any] = json.loads(bytes(payload))
    return body


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
            event = _json(message.payload)
            ann_id = str(event.get("id"))
            if event.get("state") == "playing":
                self.playing[ann_id] = event
            elif event.get("state") in ("finished", "failed"):
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
            raise RuntimeError(f"{ann_id} failed: {event.get('error')}")
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


def attribute(trials: list[Trial], arrivals: list[tuple[float, int]]) -> None:
    """Give each trial the arrivals between its publish and the next one's; check byte counts.

    Raises RuntimeError when a trial's bytes do not match its WAV (aplay may add up to one
    period of silence, allowed up to one second of audio).
    """
    times = [t for t, _ in arrivals]
    for i, trial in enumerate(trials):
        end = trials[i + 1].sent if i + 1 < len(trials) else float("inf")
        lo, hi = bisect.bisect_left(times, trial.sent), bisect.bisect_left(times, end)
        if lo < hi:
            trial.first_byte = times[lo]
            trial.nbytes = sum(n for _, n in arrivals[lo:hi])
        expected = trial.phrase.data_bytes
        slack = trial.phrase.rate_hz * 2 if trial.path == "aplay" else 0
        if not expected <= trial.nbytes <= expected + slack:
            raise RuntimeError(
                f"{trial.ann_id}: {trial.nbytes} bytes out of ALSA, WAV has {expected}"
            )


def quantiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99 in milliseconds, same method as bench.latency.percentiles (its table)."""
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(q[49], 3), "p90": round(q[89], 3), "p99": round(q[98], 3)}


def tool_version(*cmd: str) -> str:
    """First line of ``cmd``'s output, or "" when it cannot run."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return ""
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def bare_alsa_conf(path: Path) -> Path:
    """Write to ``path`` the system alsa.conf without the conf.d directories its load hook
    reads (alsa-plugins' PulseAudio, JACK, rate-converter… configs); returns ``path``."""
    lines = Path(SYSTEM_ALSA_CONF).read_text().splitlines(keepends=True)
    path.write_text("".join(ln for ln in lines if not ln.strip().endswith('/conf.d"')))
    return path


def alsa_lib_version() -> str:
    """The version of the alsa-lib this process would load (its ``file`` plugin is measured)."""
    try:
        lib = ctypes.CDLL("libasound.so.2")
    except OSError:
        return ""
    lib.snd_asoundlib_version.restype = ctypes.c_char_p
    version = lib.snd_asoundlib_version()
    return version.decode() if isinstance(version, bytes) else ""


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Cache-hit TTFA: edgespeak vs aplay spawned per announcement (ms)."
    )
    parser.add_argument("-n", type=int, default=50, help="measured announcements per path (50)")
    parser.add_argument("--phrases", type=int, default=5, help="distinct cached phrases (5)")
    parser.add_argument("--warmup", type=int, default=2, help="unrecorded A/B pairs first (2)")
    parser.add_argument("--gap-ms", type=float, default=20.0, help="pause after each, ms (20)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument(
        "--bare-alsa",
        action="store_true",
        help="both paths: alsa.conf without its conf.d hooks (no PulseAudio/plugin configs)",
    )
    parser.add_argument(
        "--aplay-arg", action="append", default=[], help="extra aplay argument (repeatable)"
    )
    args = parser.parse_args()
    if args.n < 2 or args.phrases < 1:
        parser.error("-n must be at least 2 and --phrases at least 1")
    if shutil.which("aplay") is None:
        sys.exit("aplay is not installed (apt-get install alsa-utils)")

    work = Path(tempfile.mkdtemp(prefix="edgespeak-aplay-"))
    fifo = FifoReader(work / "alsa.fifo")  # before any thread: the reader is forked
    env = clean_env(**capture_alsa_conf(work / "asound.conf", fifo.path))
    if args.bare_alsa:
        env["ALSA_CONFIG_PATH"] = f"{bare_alsa_conf(work / 'alsa.conf')}:{work / 'asound.conf'}"
    broker = Mosquitto(free_port(), work)
    config = work / "config.toml"
    config.write_text(
        f'node_id = "{NODE}"\n[mqtt]\nport = {broker.port}\n'
        '[tts]\nformat = "pcm"\nsample_rate = 22050\n'
        f'[server]\nport = {free_port()}\n[cache]\ndir = "{work / "cache"}"\n'
        '[audio]\ndevice = "default"\n'
    )
    server = LocalServer(config, work / "server.log", env)
    daemon: subprocess.Popen[bytes] | None = None
    arrivals: list[tuple[float, int]] = []
    try:
        broker.start()
        server.start()
        daemon = subprocess.Popen(
            edgespeak_command("run", "--config", str(config), "--log-level", "WARNING"),
            stderr=(work / "daemon.log").open("ab"),
            env=env,
        )
        phrases, trials = asyncio.run(run_bench(broker.port, env, fifo, work, args))
    except TimeoutError:
        if daemon is not None and daemon.poll() is not None:
            sys.exit(f"edgespeak run exited with {daemon.returncode}: see {work / 'daemon.log'}")
        raise
    finally:
        stop_process(daemon)
        server.stop()
        broker.stop()
        arrivals = fifo.stop()
    attribute(trials, arrivals)
    report(args, phrases, [t for t in trials if t.measured])
    shutil.rmtree(work, ignore_errors=True)  # kept, with the logs, when anything failed


def report(args: argparse.Namespace, phrases: list[Phrase], trials: list[Trial]) -> None:
    """Print the table and the ratios; write the JSON."""
    rows: list[tuple[PathName, str, str, list[float]]] = [
        ("edgespeak", "publish_to_alsa_ms", "publish -> first byte out of ALSA",
         [t.ttfa_ms for t in trials if t.path == "edgespeak"]),
        ("aplay", "publish_to_alsa_ms", "publish -> first byte out of ALSA",
         [t.ttfa_ms for t in trials if t.path == "aplay"]),
        ("edgespeak", "daemon_ttfa_ms", "daemon ttfa_ms (receipt -> writei)",
         [t.daemon_ttfa_ms for t in trials if t.daemon_ttfa_ms is not None]),
        ("aplay", "receipt_to_alsa_ms", "subscriber receipt -> first byte",
         [(t.first_byte - t.received) * 1000 for t in trials
          if t.received is not None and t.first_byte is not None]),
    ]  # fmt: skip
    a = quantiles(rows[0][3])
    b = quantiles(rows[1][3])
    ratio = {k: round(b[k] / a[k], 2) for k in ("p50", "p99")}
    seconds = sum(p.data_bytes for p in phrases) / 2 / phrases[0].rate_hz / len(phrases)
    print(
        f"Cache-hit TTFA, ms: {args.n} announcements per path, interleaved (ABBA) after "
        f"{args.warmup} warm-up pairs;\n{len(phrases)} phrases, {phrases[0].rate_hz} Hz mono WAV "
        f"from the edgespeak cache (mean {seconds:.1f} s);\nALSA default = plug > file > null, "
        "first byte timed at the file plugin's FIFO"
    )
    if args.aplay_arg:
        print(f"aplay extra arguments: {' '.join(args.aplay_arg)}")
    if args.bare_alsa:
        print("ALSA configuration: alsa.conf without its conf.d hooks (--bare-alsa)")
    print(f"{'path':<10} {'measured as':<36} {'n':>4} {'p50':>7} {'p90':>7} {'p99':>7}")
    for path, _, label, values in rows:
        print(f"{path:<10} {label:<36} {len(values):>4} {percentiles(values)}")
    print(
        f"ratio aplay/edgespeak, publish -> ALSA: p50 {ratio['p50']:.1f}x, p99 {ratio['p99']:.1f}x"
    )

    results: dict[str, Any] = {
        "benchmark": "bench.aplay_compare",
        "unit": "ms",
        "n": args.n,
        "warmup_pairs": args.warmup,
        "gap_ms": args.gap_ms,
        "aplay_args": ["-q", "-D", "default", *args.aplay_arg],
        "bare_alsa": args.bare_alsa,
        "phrases": [
            {"text": p.text, "seconds": round(p.data_bytes / 2 / p.rate_hz, 3)} for p in phrases
        ],
        "summary": {path: {} for path in ("edgespeak", "aplay")},
        "ratio_aplay_over_edgespeak": ratio,
        "samples": {path: {} for path in ("edgespeak", "aplay")},
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "alsa_lib": alsa_lib_version(),
            "aplay": tool_version("aplay", "--version"),
            "mosquitto": tool_version("mosquitto", "-h"),
        },
    }
    for path, key, _, values in rows:
        results["summary"][path][key] = quantiles(values) | {"n": len(values)}
        results["samples"][path][key] = [round(v, 3) for v in values]
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
