"""A TCP link that delivers a server's answers no faster than a given rate, as a cloud TTS
provider streams its audio (about as fast as it is spoken) where the local server on loopback
sends a whole phrase in a few milliseconds.

``PacedLink(target_port, bytes_per_s)`` listens on 127.0.0.1:``port`` in a thread of its own;
each connection is forwarded to 127.0.0.1:``target_port``: client → server at once, server →
client at most ``bytes_per_s`` bytes per second (in slices of ``TICK_S``), order kept.
harness.rooms puts it between the daemons and ``edgespeak serve`` so that a phrase is still
being synthesised (streamed) seconds after it began to play.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from harness.stack import free_port

TICK_S = 0.02  # the pacing slice: bytes_per_s * TICK_S bytes at most per slice


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _paced(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rate: int) -> None:
    loop = asyncio.get_running_loop()
    budget, last = 0.0, loop.time()
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(max(1, int(rate * TICK_S))):
            while data:
                now = loop.time()
                budget = min(budget + (now - last) * rate, rate * TICK_S)
                last = now
                if budget < 1:
                    await asyncio.sleep(TICK_S)  # the pacing itself: wait for the next slice
                    continue
                part, data = data[: int(budget)], data[int(budget) :]
                budget -= len(part)
                writer.write(part)
                await writer.drain()
    writer.close()


class PacedLink:
    """See the module docstring. :meth:`start` returns once it listens; :meth:`stop`."""

    def __init__(self, target_port: int, bytes_per_s: int) -> None:
        self.target_port = target_port
        self.rate = bytes_per_s
        self.port = free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_copy(reader, up_writer), _paced(up_reader, writer, self.rate))

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            loop.close()

    def start(self) -> None:
        """Listen on :attr:`port` (in a daemon thread). Raises RuntimeError if it cannot."""
        self._thread = threading.Thread(target=self._run, name="paced-link", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"the paced link did not listen on {self.port}")

    def stop(self) -> None:
        """Stop listening and forwarding."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None
