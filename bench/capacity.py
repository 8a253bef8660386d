"""Local server capacity: time to first audio with 1, 5 and 20 sessions at once (espeak-ng).

``edgespeak serve`` with ``[server] max_sessions`` and ``max_connections`` raised to 64 (defaults:
8 and 32), and K clients in this process (plain aiohttp + the Fish live protocol, as
tests/helpers.py's ``server_audio``), each with its connection already open, as the daemon's
warm one is. In each round all K send ``start``, the first sentence, ``flush``, the rest and
``stop`` at the same moment; TTFA is the client's ``time.monotonic()`` from sending ``start``
to the first ``audio`` event; each then reads to ``finish``. The server spawns one espeak-ng per
session, so on a 2-core machine K sessions share 2 cores. Rounds repeat until each K has at
least ``--sessions`` samples. Then the same at the server's defaults with 20 at once: the
sessions past ``max_sessions`` are refused at once (``finish`` with ``server busy``), which a
daemon answers with its fallback; their count and the accepted sessions' TTFA are reported.
The server speaks espeak-ng here (``[server] voice = "en"``); Piper's figures are bench/piper.py's.

``python -m bench capacity [--sessions 200] [--concurrency 1,5,20]``
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import ormsgpack

from bench.common import PHRASES, Result, Row, dist_row, rounded, value_row, write_config
from edgespeak.wire.fish import LIVE_PATH, split_first_sentence
from harness.stack import LocalServer, clean_env, free_port

NAME = "capacity"
HELP = "local server (espeak-ng): TTFA at 1, 5 and 20 concurrent sessions"
RATE = 22050
RAISED = 64
SESSION_TIMEOUT_S = 60.0


@dataclass
class Outcome:
    """One session: TTFA in ms (None when refused) and the refusal's message."""

    ttfa_ms: float | None
    refused: str | None = None


async def session(ws: aiohttp.ClientWebSocketResponse, text: str, go: asyncio.Event) -> Outcome:
    """One start…stop session on an open connection, started when ``go`` is set.

    Raises RuntimeError on an unexpected end of the stream."""
    first, rest = split_first_sentence(text)
    request = {"text": "", "format": "pcm", "sample_rate": RATE, "reference_id": None}
    frames = [{"event": "start", "request": request}, {"event": "text", "text": first},
              {"event": "flush"}] + ([{"event": "text", "text": rest}] if rest else []) + [
              {"event": "stop"}]  # fmt: skip
    packed = [ormsgpack.packb(f) for f in frames]
    await go.wait()
    started = time.monotonic()
    for frame in packed:
        await ws.send_bytes(frame)
    ttfa: float | None = None
    async with asyncio.timeout(SESSION_TIMEOUT_S):
        async for msg in ws:
            body = ormsgpack.unpackb(msg.data)
            if body["event"] == "audio" and ttfa is None:
                ttfa = (time.monotonic() - started) * 1000
            elif body["event"] == "finish":
                if body["reason"] != "stop":
                    return Outcome(None, str(body.get("message", "error")))
                return Outcome(ttfa)
    raise RuntimeError("connection closed before finish")


async def load(url: str, concurrency: int, rounds: int) -> list[Outcome]:
    """``rounds`` rounds of ``concurrency`` simultaneous sessions on warm connections."""
    outcomes: list[Outcome] = []
    async with aiohttp.ClientSession() as http:
        sockets = [await http.ws_connect(url) for _ in range(concurrency)]
        try:
            for r in range(rounds):
                go = asyncio.Event()
                tasks = [
                    asyncio.create_task(
                        session(ws, PHRASES[(r + k) % len(PHRASES)].format(n=k), go)
                    )
                    for k, ws in enumerate(sockets)
                ]
                await asyncio.sleep(0)  # every task waits on go
                go.set()
                outcomes += await asyncio.gather(*tasks)
        finally:
            for ws in sockets:
                await ws.close()
    return outcomes


def serve(work: Path, name: str, **server: object) -> tuple[LocalServer, str]:
    """``edgespeak serve`` with these ``[server]`` keys; (the server, its ws:// URL)."""
    port = free_port()
    config = write_config(work / f"{name}.toml", work, free_port(), server={"port": port} | server)
    srv = LocalServer(config, work / f"{name}.log", clean_env())
    srv.start()
    return srv, f"ws://127.0.0.1:{port}{LIVE_PATH}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", type=int, help="samples per concurrency (200; quick 20)")
    parser.add_argument("--concurrency", default="1,5,20", help="sessions at once (1,5,20)")


def run(args: argparse.Namespace) -> Result:
    sessions = args.sessions or (20 if args.quick else 200)
    levels = [int(k) for k in args.concurrency.split(",")]
    if sessions < 2 or not levels or min(levels) < 1 or max(levels) > RAISED:
        raise ValueError(f"--sessions at least 2; --concurrency between 1 and {RAISED}")
    work = Path(tempfile.mkdtemp(prefix="edgespeak-bench-capacity-"))
    rows: list[Row] = []
    summary: dict[str, object] = {}
    samples: dict[str, list[float]] = {}
    try:
        server, url = serve(work, "raised", max_sessions=RAISED, max_connections=RAISED)
        try:
            for k in levels:
                rounds = max(math.ceil(sessions / k), 2)
                outcomes = asyncio.run(load(url, k, rounds))
                ttfa = [o.ttfa_ms for o in outcomes if o.ttfa_ms is not None]
                if len(ttfa) != len(outcomes):
                    raise RuntimeError(f"{len(outcomes) - len(ttfa)} sessions failed at {k}")
                rows.append(dist_row(f"{k:>2} at once (max_sessions {RAISED}): TTFA", ttfa))
                samples[f"{k}"] = rounded(ttfa)
        finally:
            server.stop()
        server, url = serve(work, "default")
        try:
            k, rounds = max(levels), 3 if args.quick else 10
            outcomes = asyncio.run(load(url, k, rounds))
        finally:
            server.stop()
    except BaseException:
        print(f"capacity bench: logs kept in {work}")
        raise
    shutil.rmtree(work, ignore_errors=True)
    accepted = [o.ttfa_ms for o in outcomes if o.ttfa_ms is not None]
    refused = [o.refused for o in outcomes if o.refused is not None]
    rows.append(dist_row(f"{k:>2} at once, server defaults: accepted sessions' TTFA", accepted))
    rows.append(
        value_row(f"{k:>2} at once, server defaults: refused per round", len(refused) / rounds)
    )
    summary["defaults"] = {
        "sessions": len(outcomes),
        "refused": len(refused),
        "refusal": refused[0] if refused else None,
    }
    samples[f"{k}_defaults_accepted"] = rounded(accepted)
    return {
        "rows": rows,
        "config": {"sessions_per_level": sessions, "levels": levels, "format": f"pcm {RATE} Hz"},
        "summary": summary,
        "samples": samples,
    }
