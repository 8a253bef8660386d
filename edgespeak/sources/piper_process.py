"""The daemon's side of the Piper worker process (:mod:`edgespeak.sources.piper_worker`).

The worker is started once (:meth:`PiperProcess.start`: the voice is loaded and its real-time
factor measured before it says it is ready) and kept running; requests take turns, one at a
time. Nothing here imports Piper: the daemon's own memory stays as it is without the worker.
A request left early (the announcement was interrupted) is cancelled in the worker after the
sentence under way, and its remaining frames are read off in the background before the next
request is sent. If the worker dies, the requests under way fail with EngineError and
:attr:`PiperProcess.ready` turns False; :meth:`start` may be called again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import AsyncGenerator
from typing import Any

from edgespeak.sources.espeak import EngineError
from edgespeak.sources.piper_worker import AUDIO, END, ERROR, FATAL, HEADER, READY
from edgespeak.sources.voices import PiperVoiceInfo, VoiceError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0  # load, warm-up and the RTF measurement; a Pi Zero 2 W is slow


class PiperProcess:
    """A worker process speaking ``info``'s voice. After :meth:`start`: ``rate_hz`` (Hz of its
    PCM), ``rtf`` (seconds of computing per second of speech, measured at start) and
    ``load_s`` (seconds the load took)."""

    engine = "piper"

    def __init__(self, info: PiperVoiceInfo) -> None:
        self.info = info
        self.voice = info.id
        self.rate_hz = info.sample_rate
        self.rtf: float | None = None
        self.load_s: float | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._turn = asyncio.Lock()
        self._numbers = 0

    @property
    def ready(self) -> bool:
        """Started, voice loaded, and the process still running."""
        return self.rtf is not None and self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        """The worker's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Start the worker and wait until its voice is loaded. Raises VoiceError saying why
        the voice cannot be used (its files, Piper missing, the worker dying or too slow)."""
        await self.close()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "edgespeak.sources.piper_worker",
                str(self.info.model_path), str(self.info.config_path),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
        except OSError as exc:
            raise VoiceError(
                f"Piper voice {self.voice!r}: cannot start its worker: {exc}"
            ) from None
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                kind, body = await self._frame()
        except TimeoutError:
            await self.close()
            message = f"Piper voice {self.voice!r}: not loaded after {START_TIMEOUT_S:g} s"
            raise VoiceError(message) from None
        except EngineError as exc:
            await self.close()
            raise VoiceError(f"Piper voice {self.voice!r}: {exc}") from None
        if kind == FATAL:
            await self.close()
            raise VoiceError(json.loads(body)["message"])
        if kind != READY:
            await self.close()
            raise VoiceError(f"Piper voice {self.voice!r}: the worker said {kind!r} first")
        ready = json.loads(body)
        self.rate_hz, self.rtf, self.load_s = ready["rate_hz"], ready["rtf"], ready["load_s"]
        log.info(
            "Piper voice %s ready in a worker process (pid %s): loaded in %.2f s, real-time "
            "factor %.3f",
            self.voice,
            self.pid,
            self.load_s,
            self.rtf,
        )

    async def synthesize(self, text: str, *, speed: float = 1.0) -> AsyncGenerator[bytes, None]:
        """Bytes of s16le mono PCM at :attr:`rate_hz` for ``text``, one sentence at a time as
        the worker makes them; waits for requests before it. Raises EngineError when the
        worker fails the request, is not running or dies."""
        await self._turn.acquire()
        released = False
        try:
            if not self.ready:
                raise EngineError(f"the Piper worker for {self.voice!r} is not running")
            self._numbers += 1
            number = self._numbers
            self._send({"op": "say", "id": number, "text": text, "speed": speed})
            while True:
                kind, body = await self._frame()
                if kind == AUDIO:
                    yield body
                elif kind == END:
                    return
                elif kind == ERROR:
                    raise EngineError(f"Piper failed: {json.loads(body)['message']}")
        except GeneratorExit:
            released = self._cancel(number)
            raise
        except asyncio.CancelledError:
            released = self._cancel(number)
            raise
        finally:
            if not released:
                self._turn.release()

    def _cancel(self, number: int) -> bool:
        """Stop request ``number`` and read off its remaining frames in the background, which
        then gives the turn to the next request. True when that background task took over."""
        if not self.ready:
            return False
        with contextlib.suppress(ConnectionError):
            self._send({"op": "cancel", "id": number})
        task = asyncio.get_running_loop().create_task(self._drain())
        task.add_done_callback(lambda _: self._turn.release())
        return True

    async def _drain(self) -> None:
        with contextlib.suppress(EngineError):
            while (await self._frame())[0] not in (END, ERROR):
                pass

    def _send(self, request: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        if self._proc.stdin.is_closing():
            raise EngineError("the Piper worker's input is closed")
        self._proc.stdin.write(json.dumps(request).encode() + b"\n")

    async def _frame(self) -> tuple[bytes, bytes]:
        """The worker's next frame. Raises EngineError when it ended (died)."""
        assert self._proc is not None and self._proc.stdout is not None
        try:
            kind, length = HEADER.unpack(await self._proc.stdout.readexactly(HEADER.size))
            return kind, await self._proc.stdout.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            code = await self._proc.wait()
            log.error("the Piper worker for %s exited with %s", self.voice, code)
            raise EngineError(f"the Piper worker for {self.voice!r} exited ({code})") from None

    async def close(self) -> None:
        """Stop the worker (its input closed, then SIGTERM after 5 s, SIGKILL after 5 more)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        for stop in (None, proc.terminate, proc.kill):
            if stop is not None:
                with contextlib.suppress(ProcessLookupError):
                    stop()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await proc.wait()
                    return
