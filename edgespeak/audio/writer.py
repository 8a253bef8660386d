"""The ALSA writer thread: the one long-lived thread that owns the PCM for the daemon's life.

The event loop puts commands on its queue (``begin``, ``data``, ``end``, ``abort``, ``quit``;
``prime`` may come from any thread);
the thread carries them out with a :class:`~edgespeak.audio.playback.Player`, writing with
blocking ``snd_pcm_writei`` so ALSA paces playback. Between commands it keeps the device
running on silence, topped up a period at a time when there is room, and waits for the next
command meanwhile (a timed wait on the queue, not a blocking write), so a new command is seen
at once.
``data`` commands are bounded (backpressure on the producer). :meth:`Writer.stalled_s` reports
how long the thread has been inside its current call into the PCM (or waiting for room in a
full buffer), for the daemon's watchdog.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from typing import Literal

from edgespeak.audio.playback import Player, Utterance, resolve
from edgespeak.base.errors import AudioDeviceError

Kind = Literal["begin", "data", "end", "abort", "prime", "quit"]
Command = tuple[Kind, Utterance | None, bytes]


class Writer:
    """Starts the writer thread for ``player``; at most ``queue_chunks`` ``data`` commands wait
    for it (:meth:`put_data` waits for room). Commands are carried out in order."""

    def __init__(self, player: Player, queue_chunks: int) -> None:
        self._player = player
        self._queue: queue.Queue[Command] = queue.Queue()
        self._slots = asyncio.Semaphore(queue_chunks)
        # idle tracking, shared with the thread under _lock
        self._lock = threading.Lock()
        self._idle = True
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._prime_taken = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alsa-writer", daemon=True)
        self._thread.start()

    # ---- event loop side -----------------------------------------------------------------
    def put(self, kind: Kind, utt: Utterance | None) -> None:
        """Queue a command without data (``prime`` and ``quit`` have no utterance). Callable
        from any thread."""
        with self._lock:
            self._idle = False
            self._queue.put((kind, utt, b""))

    def prime(self, wait_s: float) -> bool:
        """Queue ``prime`` and wait up to ``wait_s`` seconds for the thread to take it; returns
        whether it did. Without the wait the thread, woken, waits for the GIL while the caller
        (the event loop parsing an announcement) goes on in Python: the prime's drop and
        prepare started 0.35-1.5 ms after it was asked for. Waiting lets the thread have the
        GIL at once; it lets go of it again in the drop. Callable from any thread but the
        writer's."""
        self._prime_taken.clear()
        self.put("prime", None)
        return self._prime_taken.wait(wait_s)

    async def put_data(self, utt: Utterance, pcm: bytes) -> None:
        """Queue bytes of s16le mono PCM for ``utt``; waits while ``queue_chunks`` wait."""
        await self._slots.acquire()
        with self._lock:
            self._idle = False
            self._queue.put(("data", utt, pcm))

    async def wait_idle(self) -> None:
        """Return once every command queued has been carried out, the keep-open silence
        written and the PCM drained (or closed after a failure)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._idle:
                return
            self._idle_waiters.append(fut)
        await fut

    def stalled_s(self) -> float:
        """Seconds the thread has been inside one call into the PCM, or waiting for room in a
        full buffer (0.0 when neither): any call, pre-roll after an underrun and drain
        included."""
        return self._player.device.stalled_s()

    def close(self, timeout_s: float = 5) -> None:
        """Queue ``quit`` and wait up to ``timeout_s`` seconds for the thread to end (blocks).
        What is queued before is still carried out; keep-open silence is cut short."""
        self.put("quit", None)
        self._thread.join(timeout=timeout_s)

    # ---- writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        player = self._player
        while True:
            kind, utt, pcm = self._next()
            if kind == "quit":
                self._shutdown()
                return
            if kind == "prime":
                self._prime_taken.set()
                player.prime()
            elif utt is None:
                continue
            elif kind == "data":
                player.data(utt, pcm)  # the loop is woken after: it would hold the GIL
                utt.loop.call_soon_threadsafe(self._slots.release)
            elif kind == "begin":
                player.begin(utt)
            elif kind == "end":
                player.end(utt)
            elif kind == "abort":
                player.abort(utt)

    def _next(self) -> Command:
        """The next command. Idle after an utterance: keep the device running on silence
        while waiting for one (a timed wait, so it is seen at once), then drain it."""
        command: Command | None = None
        while command is None:
            try:
                command = self._queue.get_nowait()
            except queue.Empty:
                wait_s = self._player.keep_open()
                if wait_s is None:  # nothing to keep up
                    break
                if wait_s > 0:
                    with contextlib.suppress(queue.Empty):
                        command = self._queue.get(timeout=wait_s)
        if command is None:  # idle: wait for a command as long as it takes
            self._player.settle_if_stopped()
            self._notify_idle()
            command = self._queue.get()
        self._player.settle_ended()  # whatever comes next follows it without a gap
        return command

    def _shutdown(self) -> None:
        name = self._player.device.name
        closed = AudioDeviceError(f"ALSA device {name!r}: the sink is closed")
        self._player.shutdown(closed)
        while True:  # anything queued after close(): settle it, never leave a waiter hanging
            try:
                kind, utt, _ = self._queue.get_nowait()
            except queue.Empty:
                break
            if utt is not None:
                if kind == "data":
                    utt.loop.call_soon_threadsafe(self._slots.release)
                utt.error = utt.error or closed
                self._player.finish(utt)
        self._notify_idle(closing=True)

    def _notify_idle(self, closing: bool = False) -> None:
        """Nothing left to do (or closing): wake the :meth:`wait_idle` waiters."""
        with self._lock:
            if not (closing or self._queue.empty()):
                return
            self._idle = True
            waiters, self._idle_waiters = self._idle_waiters, []
        for fut in waiters:
            fut.get_loop().call_soon_threadsafe(resolve, fut, None)
