"""The Piper worker process: one Piper voice loaded once and kept warm beside the daemon.

``python -m edgespeak.sources.piper_worker MODEL CONFIG`` loads the voice (Piper's ~230 MB
live here, never in the daemon), measures its real-time factor, says it is ready, then speaks
one request at a time until its standard input closes (the daemon is gone).

Wire protocol (the daemon's side is :mod:`edgespeak.sources.piper_process`):

- daemon → worker, one JSON object per line: ``{"op": "say", "id": N, "text": …, "speed": S}``
  or ``{"op": "cancel", "id": N}`` (stop that request after the sentence under way);
- worker → daemon, frames of a kind byte, a 4-byte big-endian length and a payload:
  ``R`` ready ``{"rate_hz", "rtf", "load_s"}``; ``F`` the voice cannot be used
  ``{"message"}``, then exit 2; ``A`` s16le mono PCM at ``rate_hz``, one sentence; ``E`` the
  request ended ``{"id"}``; ``X`` it failed ``{"id", "message"}``.
"""

from __future__ import annotations

import argparse
import json
import queue
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

HEADER = struct.Struct(">cI")  # kind, payload length in bytes
READY, FATAL, AUDIO, END, ERROR = b"R", b"F", b"A", b"E", b"X"


def frame(kind: bytes, payload: bytes | dict[str, Any]) -> bytes:
    """One frame: ``kind`` (one byte), then ``payload`` (a dict is sent as UTF-8 JSON)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return HEADER.pack(kind, len(body)) + body


class _Requests:
    """Reads the daemon's lines in a thread: ``say`` requests queued in order, cancels noted
    at once (so a request under way can stop between sentences); None queued at end of input."""

    def __init__(self, stream: BinaryIO) -> None:
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.cancelled: set[int] = set()
        self._stream = stream
        threading.Thread(target=self._read, name="requests", daemon=True).start()

    def _read(self) -> None:
        for line in self._stream:
            try:
                request = json.loads(line)
            except ValueError:
                continue
            if request.get("op") == "cancel":
                self.cancelled.add(int(request["id"]))
            elif request.get("op") == "say":
                self.queue.put(request)
        self.queue.put(None)


def serve(model: Path, config: Path, out: BinaryIO, requests_in: BinaryIO) -> int:
    """Load the voice, report, and answer requests until the input ends; the exit code."""
    from edgespeak.sources.piper import load_piper
    from edgespeak.sources.voices import VoiceError, describe

    def send(kind: bytes, payload: bytes | dict[str, Any]) -> None:
        out.write(frame(kind, payload))
        out.flush()

    started = time.perf_counter()
    try:
        engine = load_piper(describe(model, config, "worker"))
        load_s = time.perf_counter() - started
        rtf = engine.real_time_factor()
    except VoiceError as exc:
        send(FATAL, {"message": str(exc)})
        return 2
    send(READY, {"rate_hz": engine.rate_hz, "rtf": round(rtf, 4), "load_s": round(load_s, 3)})
    requests = _Requests(requests_in)
    while (request := requests.queue.get()) is not None:
        number = int(request["id"])
        try:
            for pcm in engine.sentences(str(request["text"]), speed=float(request["speed"])):
                if number in requests.cancelled:
                    break
                send(AUDIO, pcm)
        except Exception as exc:  # one request fails; the voice stays loaded for the next
            send(ERROR, {"id": number, "message": str(exc)})
        else:
            send(END, {"id": number})
        requests.cancelled.discard(number)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the worker process (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m edgespeak.sources.piper_worker")
    parser.add_argument("model", type=Path, help="the voice's .onnx file")
    parser.add_argument("config", type=Path, help="its .onnx.json file")
    args = parser.parse_args(argv)
    return serve(args.model, args.config, sys.stdout.buffer, sys.stdin.buffer)


if __name__ == "__main__":
    raise SystemExit(main())
