"""An emulated internet link in front of a plain TCP service: TLS, behind a fixed one-way delay.

``python -m bench.link --port P --target-port T --delay-ms 20 --cert C --key K`` listens on
127.0.0.1:P. Every byte a client sends reaches the TLS terminator ``delay-ms`` later, and every
byte back reaches the client ``delay-ms`` later (so one round trip costs twice the delay); the
TLS terminator (the certificate ``C`` and key ``K``) forwards the plaintext to 127.0.0.1:T at
once. Order is kept and nothing is rate-limited: a path with latency and no bandwidth limit.
Kernel netem (``tc qdisc … netem delay``) would be the usual tool; it is not available on every
machine, and this needs no privileges. Prints ``listening on P`` once both stages accept.

What it does not emulate: the TCP handshake. The kernel completes a client's connect() on
loopback before this process sees the connection, so a new connection pays one round trip less
than on a real link (TLS and the WebSocket upgrade still pay theirs). It only understates what a
per-call connection costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable

CHUNK = 65536
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay_s`` seconds after it was read (end of
    stream included); order kept."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        try:
            while data := await reader.read(CHUNK):
                queue.put_nowait((loop.time() + delay_s, data))
        except (ConnectionError, ssl.SSLError):
            pass
        queue.put_nowait((loop.time() + delay_s, b""))

    reading = asyncio.create_task(read())
    try:
        while True:
            due, data = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading


def _relay(port: int, delay_s: float) -> Handler:
    """A connection handler forwarding to 127.0.0.1:``port`` both ways with ``delay_s``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _nodelay(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        _nodelay(up_writer)
        try:
            await asyncio.gather(
                _pump(reader, up_writer, delay_s), _pump(up_reader, writer, delay_s)
            )
        finally:
            for w in (up_writer, writer):
                w.close()
                with contextlib.suppress(ConnectionError, ssl.SSLError):
                    await w.wait_closed()

    return handle


async def serve(port: int, target_port: int, delay_ms: float, cert: str, key: str) -> None:
    """Delay stage on ``port`` → TLS terminator on a free port → ``target_port``; forever."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    tls = await asyncio.start_server(
        _relay(target_port, 0.0),
        "127.0.0.1",
        0,
        ssl=context,
    )
    tls_port = tls.sockets[0].getsockname()[1]
    delay = await asyncio.start_server(
        _relay(tls_port, delay_ms / 1000),
        "127.0.0.1",
        port,
    )
    print(f"listening on {port}", flush=True)
    async with tls, delay:
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True, help="where clients connect")
    parser.add_argument("--target-port", type=int, required=True, help="the plain service")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="one way, ms (20)")
    parser.add_argument("--cert", required=True, help="PEM certificate of the TLS side")
    parser.add_argument("--key", required=True, help="its PEM private key")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.target_port, args.delay_ms, args.cert, args.key))


if __name__ == "__main__":
    main()
