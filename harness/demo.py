"""The demo (`scripts/demo.sh`): the main job on its embedded default, start to finish.

Starts Mosquitto on a free loopback port, the local TTS server and the daemon; publishes each
line of the announcements file; plays them on the default ALSA device (or, with no sound card,
into a WAV file through an ALSA ``file`` PCM); prints source, TTFA and duration of each; then
stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt

from edgespeak.base.events import TERMINAL
from edgespeak.sources.voices import find_piper_voices
from harness.stack import (
    STARTUP_S,
    LocalServer,
    Mosquitto,
    capture_alsa_conf,
    clean_env,
    edgespeak_command,
    free_port,
    has_sound_card,
    stop_process,
)

NODE = "demo"


def _write_config(
    path: Path, *, broker_port: int, server_port: int, cache: Path, sound_card: bool
) -> None:
    path.write_text(
        f'node_id = "{NODE}"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\n'
        f'[server]\nhost = "127.0.0.1"\nport = {server_port}\n'
        f'[cache]\ndir = "{cache}"\n'
        + ("" if sound_card else "[audio]\nkeep_open_s = 0\n")
        # Into a WAV file (no sound card), keep-open silence would only pad it between lines.
        + (f'[fallback]\nvoice = "{piper}"\n' if (piper := _best_piper_voice()) else "")
    )


def _best_piper_voice() -> str | None:
    """The voice the server will default to when Piper is installed: the demo's fallback
    speaks it too (in a worker process beside the daemon)."""
    if importlib.util.find_spec("piper") is None:
        return None
    best = find_piper_voices().best()
    return best.id if best is not None else None


def demo(announcements: Path, output: Path) -> int:
    """Run the demo; returns 0 when every announcement was spoken, 1 otherwise.

    The demo uses its own temporary configuration: the embedded default (local server on its
    default voice: the best installed Piper voice, else espeak-ng; ``pcm`` at 22050 Hz),
    whatever ``--config`` says.
    """
    lines = [ln.strip() for ln in announcements.read_text().splitlines()]
    texts = [ln for ln in lines if ln and not ln.startswith("#")]
    work = Path(tempfile.mkdtemp(prefix="edgespeak-demo-"))
    config = work / "config.toml"
    broker = Mosquitto(free_port(), work)
    sound_card = has_sound_card()
    _write_config(
        config,
        broker_port=broker.port,
        server_port=free_port(),
        cache=work / "cache",
        sound_card=sound_card,
    )
    if sound_card:
        env, where = clean_env(), "the default ALSA device"
    else:
        output = output.resolve()
        output.unlink(missing_ok=True)
        env = clean_env(**capture_alsa_conf(work / "asound.conf", output, file_format="wav"))
        where = f"{output} (no sound card here: ALSA file device)"
    server = LocalServer(config, work / "server.log", env)
    daemon: subprocess.Popen[bytes] | None = None
    try:
        broker.start()
        server.start()
        daemon = subprocess.Popen(
            edgespeak_command("run", "--config", str(config)),
            stderr=(work / "daemon.log").open("ab"),
            env=env,
        )
        print(f"edgespeak demo: broker 127.0.0.1:{broker.port}, playing to {where}")
        ok = asyncio.run(_announce_all(broker.port, texts, server, _server_voice(server.log)))
    finally:
        stop_process(daemon)  # SIGTERM: the daemon closes the PCM, completing the WAV
        server.stop()
        broker.stop()
    print(f"logs in {work}")
    if not sound_card:
        print(f"listen with: aplay {output}")
    return 0 if ok else 1


OFFLINE_TEXT = "The TTS server is gone, and I can still speak."


async def _announce_all(
    port: int, texts: list[str], server: LocalServer, server_voice: str
) -> bool:
    """Speak ``texts``; then stop the TTS server and speak the first again (from the cache)
    and one new text (through the offline fallback)."""
    ok = True
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(f"edgespeak/{NODE}/#", qos=1)
        messages = aiomqtt_messages(client)
        async with asyncio.timeout(STARTUP_S):
            while (await anext(messages)) != (f"edgespeak/{NODE}/availability", b"online"):
                pass
        print(f"{'#':>2}  {'source':<7} {'TTFA ms':>8} {'dur s':>6}  {'voice':<26}  text")
        offline = [texts[0], OFFLINE_TEXT] if texts else []
        for n, text in enumerate(texts + offline, 1):
            if n == len(texts) + 1:
                await asyncio.to_thread(server.stop)
                print("    (TTS server stopped: cached phrases and the fallback still speak)")
            ann_id = f"demo-{n}"
            await client.publish(
                f"edgespeak/{NODE}/announce", json.dumps({"text": text, "id": ann_id}), qos=1
            )
            event = await _final_event(messages, ann_id)
            if event.get("state") == "finished":
                print(
                    f"{n:>2}  {event['source']:<7} {event['ttfa_ms']:>8.1f} "
                    f"{event['duration_s']:>6.2f}  {_voice(event, server_voice):<26}  {text}"
                )
            else:
                ok = False
                state = str(event.get("state")).upper()
                print(f"{n:>2}  {state}: {event.get('error')}  {text}", file=sys.stderr)
    return ok


def _voice(event: dict[str, Any], server_voice: str) -> str:
    """Who spoke: the fallback's or the Piper-rendered voice, else the server's default."""
    if event.get("engine") in ("piper", "espeak-ng"):
        return f"{event.get('voice')} ({event['engine']})"
    return event.get("voice") or server_voice


def _server_voice(log: Path) -> str:
    """The server's default voice, from its log line ``default voice ID (ENGINE)``."""
    found = re.search(r"default voice (\S+ \([a-z-]+\))", log.read_text(errors="replace"))
    return found.group(1) if found else "?"


async def aiomqtt_messages(client: aiomqtt.Client) -> AsyncIterator[tuple[str, bytes]]:
    """(topic, payload bytes) of each message ``client`` receives."""
    async for message in client.messages:
        yield str(message.topic), bytes(message.payload)


async def _final_event(messages: AsyncIterator[tuple[str, bytes]], ann_id: str) -> dict[str, Any]:
    async with asyncio.timeout(120):
        while True:
            topic, payload = await anext(messages)
            if topic.endswith("/event"):
                event = json.loads(payload)
                if event.get("id") == ann_id and event.get("state") in TERMINAL:
                    return dict(event)


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.demo [--announcements FILE] [--output WAV]`` (what scripts/demo.sh
    runs); returns the exit code: 0 when every announcement finished."""
    parser = argparse.ArgumentParser(
        prog="scripts/demo.sh",
        description="start a broker, the local server and the daemon; speak the examples",
    )
    parser.add_argument(
        "--announcements",
        type=Path,
        default=Path("examples/announcements.txt"),
        help="one announcement per line (default examples/announcements.txt)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("edgespeak-demo.wav"),
        help="WAV written when the machine has no sound card",
    )
    args = parser.parse_args(argv)
    return demo(args.announcements, args.output)


if __name__ == "__main__":
    raise SystemExit(main())
