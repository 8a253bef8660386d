"""The footprint benchmark's long stream: how much a streamed announcement of ``--stream-min``
minutes (10) grows the daemon, on a device paced in real time.

The provider is :class:`bench.playback.PacedProvider` in this process (real espeak-ng speech,
s16le mono 22050 Hz, repeated, sent 150 ms ahead of real time, as a cloud provider streams);
the daemon is otherwise as shipped (cache on: the phrase is teed into it as it plays). VmRSS
is sampled every second from just before the publish to the ``finished`` event: the peak
against the RSS before is what the stream costs while it plays.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
from pathlib import Path
from typing import Any

from bench.burst import Sampler
from bench.common import NODE, peak_rss_mib, rss_mib, wait_online, watching
from bench.playback import STREAM, PacedProvider, serving
from edgespeak.sources.espeak import EspeakEngine
from harness import stack

LEAD_S = 0.15
WARM_S = 1.0  # the first announcement's length, seconds
SETTLE_S = 4.0  # keep_open_s as shipped (3 s), then the idle release


async def long_stream(
    args: argparse.Namespace, work: Path, broker: int, env: dict[str, str]
) -> dict[str, Any]:
    """One announcement streamed for ``args.stream_min`` minutes; RSS before, peak, after."""
    speech = b"".join([pcm async for pcm in EspeakEngine().synthesize(STREAM)])
    provider = PacedProvider(speech, WARM_S, LEAD_S, 0.0)  # every session: WARM_S at first
    config = work / "long-stream.toml"
    async with serving(provider) as url:
        config.write_text(
            f'node_id = "{NODE}"\n[mqtt]\nport = {broker}\n'
            f'[tts]\nurl = "{url}"\nfirst_audio_timeout_ms = 30000\n'
            f'[cache]\ndir = "{work / "long-stream-cache"}"\n'
            f'[daemon]\nstate_dir = "{work / "state-long"}"\n'
        )
        command = stack.edgespeak_command("run", "--config", str(config), "--log-level", "WARNING")
        with (work / "daemon-long-stream.log").open("ab") as log:
            proc = await asyncio.to_thread(
                subprocess.Popen, command, stdout=subprocess.DEVNULL, stderr=log, env=env
            )
        try:
            await wait_online(broker)
            async with watching(broker) as events:
                await events.say("short", "Ready.")  # connection warm, device used once
                await asyncio.sleep(SETTLE_S)  # measured settled, not synchronised
                before = rss_mib(proc.pid)
                provider.seconds = args.stream_min * 60
                with Sampler(proc.pid, 1.0) as rss:
                    _, (_, done) = await events.say(
                        "long", STREAM, timeout_s=args.stream_min * 60 * 2 + 60
                    )
                await asyncio.sleep(SETTLE_S)  # measured settled, not synchronised
                after, hwm = rss_mib(proc.pid), peak_rss_mib(proc.pid)
        finally:
            await asyncio.to_thread(stack.stop_process, proc)
    return {
        "minutes": args.stream_min,
        "seconds_played": done.get("duration_s"),
        "underruns": done.get("underruns"),
        "rss_mib_before": round(before, 1),
        "rss_mib_peak_sampled": round(max(rss.values), 1),
        "rss_mib_growth_peak": round(max(rss.values) - before, 1),
        "rss_mib_after": round(after, 1),
        "vmhwm_mib": round(hwm, 1),
    }
