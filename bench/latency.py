"""TTFA through the real path: MQTT publish → daemon → local server (espeak-ng) → ALSA.

Starts Mosquitto, ``edgespeak serve`` and ``edgespeak run`` on loopback (ALSA into a ``file``
PCM over ``null``, so playback is not paced and each announcement's TTFA is measured alone),
publishes N distinct announcements (streamed), then the same N again (cache hits), and prints
TTFA p50/p90/p99 in milliseconds as the daemon reports it (MQTT receipt → first frame handed to
ALSA) and as the publisher sees it (publish → ``playing`` event back, so it includes the
broker both ways). Usage: ``python -m bench.latency [-n 50] [--format pcm|wav|opus]``.

Next to aplay: ``python -m bench.aplay_compare`` times cache hits from outside (publish → first
bytes out of the ALSA ``file`` PCM, through a FIFO) next to the same cached WAV played by spawning
``aplay`` per announcement, both on the same device in one interleaved run, and prints the ratio
(results in bench/results-aplay.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import aiomqtt

from edgespeak.stack import (
    LocalServer,
    Mosquitto,
    capture_alsa_conf,
    clean_env,
    edgespeak_command,
    free_port,
    stop_process,
)

PHRASES = [
    "Someone is at the front door.",
    "The washing machine has finished.",
    "The garage door has been open for {n} minutes.",
    "Good morning. It is {n} degrees outside.",
    "Attention: motion detected in the garden. Camera {n} is recording.",
]


def percentiles(values: list[float]) -> str:
    """``p50 / p90 / p99`` of ``values`` (milliseconds), or "-" when empty."""
    if len(values) < 2:
        return "-"
    q = statistics.quantiles(values, n=100, method="inclusive")
    return f"{q[49]:7.1f} {q[89]:7.1f} {q[98]:7.1f}"


async def run_round(port: int, texts: list[str], tag: str) -> tuple[list[float], list[float]]:
    """Announce each text; return (daemon TTFA ms, publisher-seen TTFA ms) of each."""
    daemon_ms: list[float] = []
    seen_ms: list[float] = []
    nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    async with aiomqtt.Client("127.0.0.1", port, socket_options=nodelay) as client:
        await client.subscribe("edgespeak/bench/event", qos=1)
        messages = client.messages
        for i, text in enumerate(texts):
            ann_id = f"{tag}-{i}"
            sent = time.monotonic()
            payload = json.dumps({"text": text, "id": ann_id})
            await client.publish("edgespeak/bench/announce", payload, qos=1)
            async for message in messages:
                event = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                if event.get("id") != ann_id:
                    continue
                if event["state"] == "playing":
                    seen_ms.append((time.monotonic() - sent) * 1000)
                    daemon_ms.append(event["ttfa_ms"])
                if event["state"] in ("finished", "failed"):
                    if event["state"] == "failed":
                        raise RuntimeError(f"{ann_id} failed: {event.get('error')}")
                    break
    return daemon_ms, seen_ms


async def wait_online(port: int) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe("edgespeak/bench/availability", qos=1)
        async with asyncio.timeout(20):
            async for message in client.messages:
                if message.payload == b"online":
                    return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=50, help="announcements per round (default 50)")
    parser.add_argument("--format", default="pcm", choices=["pcm", "wav", "opus"])
    parser.add_argument(
        "--broker-default",
        action="store_true",
        help="leave Mosquitto's set_tcp_nodelay at its default (false) to see Nagle's cost",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgespeak-bench-"))
    broker = Mosquitto(free_port(), work, nodelay=not args.broker_default)
    config = work / "config.toml"
    rate = 48000 if args.format == "opus" else 22050
    config.write_text(
        f'node_id = "bench"\n[mqtt]\nport = {broker.port}\n'
        f'[tts]\nformat = "{args.format}"\nsample_rate = {rate}\n'
        f'[server]\nport = {free_port()}\n[cache]\ndir = "{work / "cache"}"\n'
    )
    env = clean_env(**capture_alsa_conf(work / "asound.conf", Path("/dev/null")))
    server = LocalServer(config, work / "server.log", env)
    daemon = None
    texts = [PHRASES[i % len(PHRASES)].format(n=i) + f" Message {i}." for i in range(args.n)]
    try:
        broker.start()
        server.start()
        daemon = subprocess.Popen(
            edgespeak_command("run", "--config", str(config), "--log-level", "WARNING"),
            stderr=(work / "daemon.log").open("ab"),
            env=env,
        )
        asyncio.run(wait_online(broker.port))
        stream = asyncio.run(run_round(broker.port, texts, "stream"))
        cache = asyncio.run(run_round(broker.port, texts, "cache"))
    finally:
        stop_process(daemon)
        server.stop()
        broker.stop()
    nagle = "default (Nagle on)" if args.broker_default else "set_tcp_nodelay true"
    print(f"TTFA, ms: {args.n} announcements each, format {args.format}, local espeak-ng server,")
    print(f"Mosquitto {nagle}")
    print(f"{'path':<8} {'measured by':<30} {'p50':>7} {'p90':>7} {'p99':>7}")
    for name, (daemon_ms, seen_ms) in (("stream", stream), ("cache", cache)):
        print(f"{name:<8} {'daemon (receipt -> ALSA)':<30} {percentiles(daemon_ms)}")
        print(f"{name:<8} {'publisher (publish -> playing)':<30} {percentiles(seen_ms)}")


if __name__ == "__main__":
    main()
