"""Streamed TTFA overhead: what edgespeak adds to the TTS server's own time to first audio, next
to the official Fish SDK's per-call connection; on loopback and over an emulated internet link.

The server is ``edgespeak serve`` (espeak-ng) with ``close_after_finish = true``: it closes
each connection after ``finish``, as Fish's cloud documents (docs/protocols.md §1), so the
daemon's advantage is only the connection it opens ahead of time, never a reused one. The
server logs, per session, the milliseconds from handling ``start`` to sending the first
``audio`` (``first audio after X ms``): the server's own time to first audio, read back here
for every trial.

Path A (edgespeak): Mosquitto, the server and ``edgespeak run`` (cache and fallback off, so
every announcement is streamed). TTFA is measured from outside as in bench/cache_hit.py:
``time.monotonic()`` just before the MQTT publish → the first bytes out of the ALSA ``file``
PCM (bench/fifo.py). The daemon runs with ``[audio] period_ms = 5, buffer_ms = 20`` so the
``file`` plugin writes out inside the first chunk's writei calls (it writes only past one
buffer; with the default 80 ms buffer it would wait for the server's second chunk, an artefact
of the observation, not of playback). Overhead = TTFA - the server's time for that session.
The daemon's own ``ttfa_ms`` (MQTT receipt → first frame handed to ALSA) minus the server's
time is reported too.

Path B (Fish SDK): ``fish-audio-sdk`` 1.3.0 (package ``fishaudio``), the sync client as its
README shows it, created once: ``FishAudio(api_key=..., base_url=...).tts.stream_websocket([
first sentence, FlushEvent(), rest], format="pcm", ...)``, which opens a new WebSocket per call
(TCP, TLS when ``https``, HTTP upgrade). Sent: the same start, text, flush, text, stop as the
daemon. Measured: the call → its first audio chunk (nothing played). Overhead = that - the
server's time for that session. So B's figure leaves out MQTT and ALSA, which A's includes.

Links: ``loopback`` (ws://, no delay) and ``internet`` (wss:// with a certificate made here by
tests/pki.py, through bench/link.py: TLS and ``--delay-ms`` each way, so one round trip costs
2 x delay; the TCP handshake is not delayed, which understates B's cost by one round trip). The
daemon and the SDK trust the generated CA through ``SSL_CERT_FILE`` (aiohttp's and httpx's
default SSL contexts both read it). A and B run interleaved (ABBA) with ``--gap-ms`` between
trials (the daemon reconnects after each ``finish`` meanwhile, as it would between real
announcements) after two unrecorded pairs.

``python -m bench stream [-n 100] [--delay-ms 20] [--gap-ms 300] [--links loopback,internet]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bench.common import (
    PHRASES,
    Events,
    Result,
    Row,
    dist_row,
    quantiles,
    ratio_row,
    rounded,
    start_daemon,
    wait_online,
    watching,
    write_config,
)
from bench.fifo import FifoReader, between
from edgespeak.wire.fish import LIVE_PATH, split_first_sentence
from harness.stack import (
    STARTUP_S,
    LocalServer,
    Mosquitto,
    StackError,
    capture_alsa_conf,
    clean_env,
    free_port,
    stop_process,
)
from tests.pki import make_pki

NAME = "stream"
HELP = "streamed TTFA minus the server's own first-audio time, next to the Fish SDK"
RATE = 22050  # Hz, s16le mono, both paths
TRIAL_TIMEOUT_S = 30.0
FIRST_AUDIO = re.compile(rb"session finished: \d+ characters, first audio after ([\d.]+) ms")

Who = Literal["edgespeak", "sdk"]


@dataclass
class Trial:
    """One announcement (A) or SDK call (B); times are ``time.monotonic()`` seconds."""

    who: Who
    text: str
    measured: bool
    sent: float = 0.0
    server_ms: float = 0.0  # the server's own start -> first audio
    first_chunk_ms: float | None = None  # B: call -> first audio chunk
    daemon_ttfa_ms: float | None = None  # A: from the ``playing`` event
    played_bytes: int = 0  # A: from ``duration_s`` of ``finished``
    first_byte: float | None = None  # A: first byte out of ALSA
    nbytes: int = 0

    @property
    def ttfa_ms(self) -> float:
        """A: publish → first byte out of ALSA; B: call → first chunk (milliseconds)."""
        if self.who == "sdk":
            assert self.first_chunk_ms is not None
            return self.first_chunk_ms
        assert self.first_byte is not None
        return (self.first_byte - self.sent) * 1000


class ServerLog:
    """The ``first audio after X ms`` values the server logs, read in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    async def next_ms(self, timeout_s: float = 10.0) -> float:
        """The next session's first-audio milliseconds (polls the log every 2 ms).

        Raises TimeoutError after ``timeout_s`` seconds."""
        async with asyncio.timeout(timeout_s):
            while True:
                with self.path.open("rb") as f:
                    f.seek(self._offset)
                    data = f.read()
                for line in data.splitlines(keepends=True):
                    if not line.endswith(b"\n"):
                        break
                    self._offset += len(line)
                    if found := FIRST_AUDIO.search(line):
                        return float(found.group(1))
                await asyncio.sleep(0.002)


def sdk_first_chunk_ms(client: Any, text: str) -> float:
    """One ``stream_websocket`` call of the official SDK (blocking): milliseconds from the call
    to its first audio chunk; the rest is read to the end. Raises RuntimeError without audio."""
    from fishaudio import FlushEvent, TTSConfig  # type: ignore[import-untyped]

    first, rest = split_first_sentence(text)
    texts: list[Any] = [first, FlushEvent()] + ([rest] if rest else [])
    config = TTSConfig(format="pcm", sample_rate=RATE)
    started = time.monotonic()
    chunks: Iterator[bytes] = iter(client.tts.stream_websocket(texts, config=config))
    for chunk in chunks:
        if chunk:
            ms = (time.monotonic() - started) * 1000
            break
    else:
        raise RuntimeError(f"the Fish SDK got no audio for {text!r}")
    for _ in chunks:
        pass
    return ms


@dataclass
class LinkRun:
    """One link's trials: the daemon on ``url``, the SDK on ``base_url``."""

    name: str
    url: str
    base_url: str
    env: dict[str, str]  # the daemon's and the SDK's additions (SSL_CERT_FILE)


async def run_trials(
    link: LinkRun, events: Events, fifo: FifoReader, log: ServerLog, args: argparse.Namespace
) -> list[Trial]:
    """Interleaved A/B trials on one link (the daemon is already online)."""
    from fishaudio import FishAudio

    previous = {k: os.environ.get(k) for k in link.env}
    os.environ.update(link.env)  # httpx reads SSL_CERT_FILE when the client is made
    try:
        client = FishAudio(api_key="bench", base_url=link.base_url)
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    trials: list[Trial] = []
    try:
        for i in range(args.warmup + args.n):
            text = PHRASES[i % len(PHRASES)].format(n=i) + f" This is message {i}."
            order: tuple[Who, Who] = ("edgespeak", "sdk")
            for who in order if i % 2 == 0 else order[::-1]:  # ABBA
                trial = Trial(who, text, i >= args.warmup)
                if who == "sdk":
                    trial.first_chunk_ms = await asyncio.to_thread(sdk_first_chunk_ms, client, text)
                else:
                    await announce(events, trial, f"{link.name}-{i}")
                trial.server_ms = await log.next_ms()
                await fifo.drained()
                trials.append(trial)
                await asyncio.sleep(args.gap_ms / 1000)  # time between announcements
    finally:
        client.close()
    return trials


async def announce(events: Events, trial: Trial, ann_id: str) -> None:
    after = len(events.seen)
    trial.sent = await events.announce(ann_id, trial.text)
    _, playing = await events.wait(ann_id, "playing", after, TRIAL_TIMEOUT_S)
    _, done = await events.wait(ann_id, "finished", after, TRIAL_TIMEOUT_S)
    if done.get("source") != "stream":
        raise RuntimeError(f"{ann_id} was not streamed: {done}")
    trial.daemon_ttfa_ms = float(playing["ttfa_ms"])
    trial.played_bytes = round(float(done["duration_s"]) * RATE) * 2


def attribute(trials: list[Trial], arrivals: list[tuple[float, int]]) -> None:
    """Give each daemon trial the ALSA output between its publish and the next one's.

    Raises RuntimeError when the bytes do not match what it played (±2 ms of audio)."""
    mine = [t for t in trials if t.who == "edgespeak"]
    for i, trial in enumerate(mine):
        end = mine[i + 1].sent if i + 1 < len(mine) else float("inf")
        trial.first_byte, trial.nbytes = between(arrivals, trial.sent, end)
        if trial.first_byte is None or abs(trial.nbytes - trial.played_bytes) > RATE * 2 // 500:
            raise RuntimeError(
                f"{trial.text!r}: {trial.nbytes} bytes out of ALSA, played {trial.played_bytes}"
            )


def start_link(work: Path, target_port: int, delay_ms: float, cert: Path, key: Path) -> tuple[
    subprocess.Popen[bytes], int
]:  # fmt: skip
    """bench/link.py in front of ``target_port``; (its process, its port)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.link", "--port", str(port),
         "--target-port", str(target_port), "--delay-ms", str(delay_ms),
         "--cert", str(cert), "--key", str(key)],
        stdout=subprocess.PIPE, stderr=(work / "link.log").open("ab"),
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("listening on"):
        stop_process(proc)
        raise StackError(f"bench.link did not start (see {work / 'link.log'}): {line!r}")
    return proc, port


async def measure(
    links: list[LinkRun], broker: int, config_of: dict[str, Path], env: dict[str, str],
    fifo: FifoReader, log: ServerLog, work: Path, args: argparse.Namespace,
) -> dict[str, list[Trial]]:  # fmt: skip
    """Each link in turn: its daemon, then its trials."""
    results: dict[str, list[Trial]] = {}
    async with watching(broker) as events:
        for link in links:
            daemon = start_daemon(config_of[link.name], env | link.env, work / f"{link.name}.log")
            try:
                await wait_online(broker, STARTUP_S)
                results[link.name] = await run_trials(link, events, fifo, log, args)
            finally:
                await asyncio.to_thread(stop_process, daemon)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", type=int, help="measured trials per path and link (100; quick 8)")
    parser.add_argument("--warmup", type=int, default=2, help="unrecorded A/B pairs first (2)")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="internet: one way (20)")
    parser.add_argument("--gap-ms", type=float, default=300.0, help="pause after each (300)")
    parser.add_argument(
        "--links", default="loopback,internet", help="loopback, internet or both (default)"
    )


def run(args: argparse.Namespace) -> Result:
    """Run both paths on each link; rows, summary and samples."""
    args.n = args.n or (8 if args.quick else 100)
    names = [name.strip() for name in args.links.split(",") if name.strip()]
    if args.n < 2 or not set(names) <= {"loopback", "internet"} or not names:
        raise ValueError("-n must be at least 2; --links: loopback, internet or both")
    work = Path(tempfile.mkdtemp(prefix="edgespeak-bench-stream-"))
    fifo = FifoReader(work / "alsa.fifo")
    env = clean_env(**capture_alsa_conf(work / "asound.conf", fifo.path))
    broker = Mosquitto(free_port(), work)
    server_port = free_port()
    server_toml = write_config(
        work / "server.toml", work, broker.port,
        server={"port": server_port, "close_after_finish": True},
    )  # fmt: skip
    server = LocalServer(server_toml, work / "server.log", env)
    link_proc: subprocess.Popen[bytes] | None = None
    links: list[LinkRun] = []
    config_of: dict[str, Path] = {}
    try:
        broker.start()
        server.start()
        if "loopback" in names:
            links.append(LinkRun("loopback", f"ws://127.0.0.1:{server_port}{LIVE_PATH}",
                                 f"http://127.0.0.1:{server_port}", {}))  # fmt: skip
        if "internet" in names:
            pki = make_pki(work / "pki", "edgespeak bench")
            link_proc, port = start_link(
                work, server_port, args.delay_ms, pki.server_cert, pki.server_key
            )
            trust = {"SSL_CERT_FILE": str(pki.ca)}
            links.append(LinkRun("internet", f"wss://127.0.0.1:{port}{LIVE_PATH}",
                                 f"https://127.0.0.1:{port}", trust))  # fmt: skip
        for link in links:
            config_of[link.name] = write_config(
                work / f"{link.name}.toml", work, broker.port,
                tts={"url": link.url, "format": "pcm", "sample_rate": RATE,
                     "first_audio_timeout_ms": 10000},
                cache={"enabled": False}, fallback={"enabled": False},
                audio={"keep_open_s": 0, "period_ms": 5, "buffer_ms": 20},
            )  # fmt: skip
        log = ServerLog(work / "server.log")
        results = asyncio.run(measure(links, broker.port, config_of, env, fifo, log, work, args))
    except BaseException:
        print(f"stream bench: logs kept in {work}")
        raise
    finally:
        stop_process(link_proc)
        server.stop()
        broker.stop()
        arrivals = fifo.stop()
    attribute([t for trials in results.values() for t in trials], arrivals)  # in time order
    shutil.rmtree(work, ignore_errors=True)
    return report(args, {k: [t for t in v if t.measured] for k, v in results.items()})


def report(args: argparse.Namespace, results: dict[str, list[Trial]]) -> Result:
    rows: list[Row] = []
    summary: dict[str, Any] = {}
    samples: dict[str, Any] = {}
    for link, trials in results.items():
        a = [t for t in trials if t.who == "edgespeak"]
        b = [t for t in trials if t.who == "sdk"]
        series = {
            "edgespeak_ttfa_ms": [t.ttfa_ms for t in a],
            "edgespeak_overhead_ms": [t.ttfa_ms - t.server_ms for t in a],
            "edgespeak_daemon_overhead_ms": [
                t.daemon_ttfa_ms - t.server_ms for t in a if t.daemon_ttfa_ms is not None
            ],
            "edgespeak_server_ms": [t.server_ms for t in a],
            "sdk_first_chunk_ms": [t.ttfa_ms for t in b],
            "sdk_overhead_ms": [t.ttfa_ms - t.server_ms for t in b],
            "sdk_server_ms": [t.server_ms for t in b],
        }
        summary[link] = {key: quantiles(values) for key, values in series.items()}
        samples[link] = {key: rounded(values) for key, values in series.items()}
        over_a, over_b = summary[link]["edgespeak_overhead_ms"], summary[link]["sdk_overhead_ms"]
        summary[link]["ratio_sdk_over_edgespeak_overhead"] = {
            k: round(over_b[k] / over_a[k], 2) for k in ("p50", "p99")
        }
        rows += [
            dist_row(f"{link}: server's own start -> first audio", series["edgespeak_server_ms"]),
            dist_row(f"{link}: edgespeak publish -> first byte out of ALSA",
                     series["edgespeak_ttfa_ms"]),
            dist_row(f"{link}: edgespeak overhead (that - server's time)",
                     series["edgespeak_overhead_ms"]),
            dist_row(f"{link}: Fish SDK call -> first chunk", series["sdk_first_chunk_ms"]),
            dist_row(f"{link}: Fish SDK overhead (that - server's time)",
                     series["sdk_overhead_ms"]),
            ratio_row(f"{link}: overhead SDK / edgespeak", over_b, over_a),
        ]  # fmt: skip
    return {
        "rows": rows,
        "config": {
            "n": args.n,
            "warmup_pairs": args.warmup,
            "gap_ms": args.gap_ms,
            "internet_delay_ms_each_way": args.delay_ms,
            "format": f"pcm s16le mono {RATE} Hz",
            "server": "edgespeak serve (espeak-ng), close_after_finish = true",
            "sdk": "fish-audio-sdk 1.3.0, FishAudio(...).tts.stream_websocket, one per call",
        },
        "summary": summary,
        "samples": samples,
    }
