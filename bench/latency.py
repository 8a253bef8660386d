"""TTFA as the daemon and the publisher see it, streamed and cached; Mosquitto's Nagle cost.

Starts Mosquitto, ``edgespeak serve`` and ``edgespeak run`` on loopback (ALSA into a ``file``
PCM over ``null``, so playback is not paced and each announcement's TTFA is measured alone),
publishes N distinct announcements (streamed), then the same N again (cache hits), and reports
TTFA p50/p90/p99 in milliseconds as the daemon reports it (MQTT receipt → first frame handed to
ALSA) and as the publisher sees it (publish → ``playing`` event back, so it includes the
broker both ways). ``--broker-default`` leaves Mosquitto's ``set_tcp_nodelay`` at its default
(false) to show what Nagle's algorithm costs (README, "Broker latency"). Not part of ``all``:
bench/cache_hit.py and bench/stream.py measure the published figures from outside the daemon.

``python -m bench latency [-n 50] [--format pcm|wav|opus] [--broker-default]``
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.common import (
    PHRASES,
    Events,
    Result,
    dist_row,
    rounded,
    start_daemon,
    wait_online,
    watching,
    write_config,
)
from harness.stack import (
    LocalServer,
    Mosquitto,
    capture_alsa_conf,
    clean_env,
    free_port,
    stop_process,
)

NAME = "latency"
HELP = "daemon-reported and publisher-seen TTFA, streamed and cached (Nagle: --broker-default)"


async def run_round(events: Events, texts: list[str], tag: str) -> tuple[list[float], list[float]]:
    """Announce each text; return (daemon TTFA ms, publisher-seen TTFA ms) of each."""
    daemon_ms: list[float] = []
    seen_ms: list[float] = []
    for i, text in enumerate(texts):
        ann_id, after = f"{tag}-{i}", len(events.seen)
        sent = await events.announce(ann_id, text)
        at, playing = await events.wait(ann_id, "playing", after)
        seen_ms.append((at - sent) * 1000)
        daemon_ms.append(playing["ttfa_ms"])
        await events.wait(ann_id, "finished", after)
    return daemon_ms, seen_ms


async def rounds(port: int, texts: list[str]) -> dict[str, tuple[list[float], list[float]]]:
    await wait_online(port)
    async with watching(port) as events:
        return {tag: await run_round(events, texts, tag) for tag in ("stream", "cache")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", type=int, help="announcements per round (50; quick 10)")
    parser.add_argument("--format", default="pcm", choices=["pcm", "wav", "opus"])
    parser.add_argument(
        "--broker-default",
        action="store_true",
        help="leave Mosquitto's set_tcp_nodelay at its default (false) to see Nagle's cost",
    )


def run(args: argparse.Namespace) -> Result:
    n = args.n or (10 if args.quick else 50)
    work = Path(tempfile.mkdtemp(prefix="edgespeak-bench-latency-"))
    broker = Mosquitto(free_port(), work, nodelay=not args.broker_default)
    rate = 48000 if args.format == "opus" else 22050
    config = write_config(
        work / "config.toml", work, broker.port, tts={"format": args.format, "sample_rate": rate}
    )
    env = clean_env(**capture_alsa_conf(work / "asound.conf", Path("/dev/null")))
    server = LocalServer(config, work / "server.log", env)
    daemon: subprocess.Popen[bytes] | None = None
    texts = [PHRASES[i % len(PHRASES)].format(n=i) + f" Message {i}." for i in range(n)]
    try:
        broker.start()
        server.start()
        daemon = start_daemon(config, env, work / "daemon.log")
        results = asyncio.run(rounds(broker.port, texts))
    except BaseException:
        print(f"latency bench: logs kept in {work}")
        raise
    finally:
        stop_process(daemon)
        server.stop()
        broker.stop()
    shutil.rmtree(work, ignore_errors=True)
    nagle = "default (Nagle on)" if args.broker_default else "set_tcp_nodelay true"
    rows = []
    for tag, (daemon_ms, seen_ms) in results.items():
        rows.append(dist_row(f"{tag}: daemon ttfa_ms (MQTT receipt -> writei)", daemon_ms))
        rows.append(dist_row(f"{tag}: publisher (publish -> playing event back)", seen_ms))
    return {
        "rows": rows,
        "config": {"n": n, "format": args.format, "mosquitto": nagle},
        "samples": {
            tag: {"daemon_ttfa_ms": rounded(d), "publisher_ms": rounded(s)}
            for tag, (d, s) in results.items()
        },
    }
