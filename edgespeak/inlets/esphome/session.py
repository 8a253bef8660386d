"""One API client's connection after its framing is settled: the message state machine.

States: ``hello`` (only HelloRequest, PingRequest and DisconnectRequest are taken; anything
else ends the connection, as ESPHome does) → ``ready`` (no password: authentication always
succeeds) → closed. A client silent for ``timeout_s`` / 2 is sent a PingRequest; silent for
``timeout_s`` it is dropped. Home Assistant and aioesphomeapi ping every 20 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

from edgespeak import __version__
from edgespeak.inlets.esphome.device import Device
from edgespeak.inlets.esphome.framing import Transport
from edgespeak.inlets.esphome.messages import API_VERSION, ProtocolError, decode, encode, pb
from edgespeak.inlets.esphome.player import MediaPlayer

log = logging.getLogger(__name__)
_BEFORE_HELLO = ("HelloRequest", "PingRequest", "DisconnectRequest")


class Session:
    """Serves one client over ``transport`` until it leaves, breaks the protocol or falls
    silent. ``peer``: ``host:port`` for the logs. ``subscribed``: it asked for states."""

    def __init__(
        self,
        transport: Transport,
        writer: asyncio.StreamWriter,
        peer: str,
        *,
        device: Device,
        player: MediaPlayer,
        timeout_s: float,
    ) -> None:
        self._transport = transport
        self._writer = writer
        self.peer = peer
        self._device = device
        self._player = player
        self._timeout_s = timeout_s
        self.stage: Literal["hello", "ready", "closed"] = "hello"
        self.subscribed = False
        self.client_info = ""
        self._heard = 0.0  # loop time of the last message received
        self._dropped = False

    def send(self, *messages: Any) -> None:
        """Queue ``messages`` to the client (nothing once closed)."""
        if self.stage != "closed" and not self._writer.is_closing():
            self._transport.write([encode(m) for m in messages])

    def abort(self) -> None:
        """Close the connection at once (the daemon stops)."""
        self.stage = "closed"
        self._writer.transport.abort()

    async def run(self) -> None:
        """Read and answer until the client leaves or is dropped. Raises nothing for what the
        client does (EOF, a reset, a protocol error, silence: logged); cancelled, it stops."""
        loop = asyncio.get_running_loop()
        self._heard = loop.time()
        keepalive = asyncio.create_task(self._keepalive(), name=f"esphome-keepalive-{self.peer}")
        try:
            while self.stage != "closed":
                message_id, payload = await self._transport.read()
                self._heard = loop.time()
                message = decode(message_id, payload)
                if message is None:
                    log.debug("%s: skipping unknown message id %d", self.peer, message_id)
                    continue
                self._handle(message)
                await self._writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            if not self._dropped:
                log.info("ESPHome API client %s (%s) left", self.peer, self.client_info or "?")
        except ProtocolError as exc:
            log.warning("ESPHome API client %s dropped: %s", self.peer, exc)
        finally:
            self.stage = "closed"
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive

    async def _keepalive(self) -> None:
        """Ping a client silent for half the timeout; drop it (abort the connection) when it
        stays silent for the whole of it."""
        loop = asyncio.get_running_loop()
        half = self._timeout_s / 2
        pinged_for = None
        while True:
            quiet = loop.time() - self._heard
            if quiet >= self._timeout_s:
                log.warning("ESPHome API client %s dropped: silent for %g s", self.peer, quiet)
                self._dropped = True
                self._writer.transport.abort()
                return
            if quiet >= half and pinged_for != self._heard:
                pinged_for = self._heard
                self.send(pb.PingRequest())
            wait = (half if quiet < half else self._timeout_s) - quiet
            await asyncio.sleep(wait)  # a protocol timer, woken to re-check the silence

    def _handle(self, message: Any) -> None:
        kind = type(message).__name__
        if self.stage == "hello" and kind not in _BEFORE_HELLO:
            raise ProtocolError(f"{kind} before HelloRequest")
        handler = self._handlers().get(kind)
        if handler is not None:
            handler(message)
        else:  # logs, Home Assistant states and services, Bluetooth...: a bare device ignores them
            log.debug("%s: ignoring %s", self.peer, kind)

    def _handlers(self) -> dict[str, Callable[[Any], None]]:
        return {
            "HelloRequest": self._hello,
            "AuthenticationRequest": lambda _: self.send(
                pb.AuthenticationResponse(invalid_password=False)
            ),
            "DeviceInfoRequest": lambda _: self.send(self._device.info()),
            "ListEntitiesRequest": lambda _: self.send(
                self._player.entity(), pb.ListEntitiesDoneResponse()
            ),
            "SubscribeStatesRequest": self._subscribe,
            "MediaPlayerCommandRequest": self._player.command,
            "PingRequest": lambda _: self.send(pb.PingResponse()),
            "GetTimeRequest": lambda _: self.send(
                pb.GetTimeResponse(epoch_seconds=int(time.time()))
            ),
            "DisconnectRequest": self._disconnect,
            "DisconnectResponse": self._close,
        }

    def _hello(self, message: Any) -> None:
        self.client_info = message.client_info[:64]
        log.info("ESPHome API client %s: %s (API %d.%d)", self.peer, self.client_info,
                 message.api_version_major, message.api_version_minor)  # fmt: skip
        self.send(
            pb.HelloResponse(
                api_version_major=API_VERSION[0],
                api_version_minor=API_VERSION[1],
                server_info=f"edgespeak {__version__}",
                name=self._device.name,
            )
        )
        self.stage = "ready"

    def _subscribe(self, _: Any) -> None:
        self.subscribed = True
        self.send(self._player.state_message())

    def _disconnect(self, _: Any) -> None:
        self.send(pb.DisconnectResponse())
        self._close(None)

    def _close(self, _: Any) -> None:
        self.stage = "closed"
