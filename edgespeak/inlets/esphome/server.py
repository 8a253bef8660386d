"""The ESPHome native API server: accepts Home Assistant (and any aioesphomeapi client, an
ESPHome dashboard), several at once, each in its own :class:`Session`.

The client's first byte picks the framing; one that does not match the device's (a key set:
Noise only; none: plaintext only) is told so and closed (see
:mod:`edgespeak.inlets.esphome.framing`). State changes of the media player go to every
client that subscribed. A port that cannot be bound is logged and tried again with a growing
delay: the MQTT side goes on meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from edgespeak.audio.alsa import AlsaSink
from edgespeak.base.backoff import Backoff
from edgespeak.base.events import Event
from edgespeak.config import Settings
from edgespeak.inlets.esphome.device import Device
from edgespeak.inlets.esphome.discovery import Advertiser
from edgespeak.inlets.esphome.framing import PlainTransport, Transport, refusal
from edgespeak.inlets.esphome.player import MediaPlayer
from edgespeak.inlets.esphome.session import Session
from edgespeak.inlets.homeassistant.state import NodeState
from edgespeak.scheduling.scheduler import Scheduler
from edgespeak.speaking.volume import VolumeStore

log = logging.getLogger(__name__)


class EsphomeServer:
    """The server and its media player. :meth:`run` serves until cancelled; :meth:`observe`
    takes every announcement event. ``port``: the bound port once listening (``[esphome]
    port`` 0 picks a free one)."""

    def __init__(
        self,
        settings: Settings,
        scheduler: Scheduler,
        sink: AlsaSink,
        volumes: VolumeStore,
        state: NodeState,
        publish: Callable[[Event], None],
        changed: Callable[[], None],
    ) -> None:
        self._config = settings.esphome
        self._key = self._config.resolved_key()  # ConfigError: a bad credential, at start
        self.device = Device.from_settings(settings, encrypted=self._key is not None)
        self.player = MediaPlayer(
            scheduler, sink, volumes, state, publish, changed, rate_hz=settings.tts.rate_hz
        )
        self.player.on_change = self._broadcast
        self.sessions: set[Session] = set()
        self.port: int | None = None
        self.listening = asyncio.Event()

    def observe(self, event: Event) -> None:
        """Take in one announcement event (the media player's state follows it)."""
        self.player.observe(event)

    async def run(self) -> None:
        """Listen (retrying a port that cannot be bound), advertise, serve until cancelled."""
        server = await self._listen()
        advertiser = Advertiser(self.device, self._config.host) if self._config.discovery else None
        try:
            if advertiser is not None:
                try:
                    await advertiser.start(self.port or 0)
                except OSError as exc:
                    log.error("mDNS advertisement failed (add the device by host): %s", exc)
            self.listening.set()
            await server.serve_forever()
        finally:
            server.close()
            if advertiser is not None:
                await advertiser.close()
            for session in list(self.sessions):
                session.abort()

    async def _listen(self) -> asyncio.Server:
        failures = 0
        backoff = Backoff(first_s=1.0, max_s=60.0)
        c = self._config
        while True:
            try:
                server = await asyncio.start_server(self._serve, c.host, c.port)
            except OSError as exc:
                failures += 1
                delay = backoff.after(failures)
                log.error("ESPHome API cannot listen on %s:%d: %s; again in %.0f s",
                          c.host, c.port, exc.strerror or exc, delay)  # fmt: skip
                await asyncio.sleep(delay)
                continue
            self.port = int(server.sockets[0].getsockname()[1])
            mode = "Noise encryption" if self._key else "plaintext, no encryption key"
            log.info("ESPHome API listening on %s:%d (%s)", c.host, self.port, mode)
            return server

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if peername else "?"
        try:
            async with asyncio.timeout(self._config.client_timeout_s):  # a silent connection
                transport = await self._framing(reader, writer, peer)
            if transport is None:
                return
            session = Session(
                transport, writer, peer, device=self.device, player=self.player,
                timeout_s=self._config.client_timeout_s,
            )  # fmt: skip
            self.sessions.add(session)
            try:
                await session.run()
            finally:
                self.sessions.discard(session)
        except (asyncio.IncompleteReadError, ConnectionError):
            log.debug("ESPHome API client %s left during the handshake", peer)
        except TimeoutError:
            log.warning("ESPHome API client %s dropped: no handshake within %g s", peer,
                        self._config.client_timeout_s)  # fmt: skip
        except Exception:  # one client's bug must not take the server down
            log.exception("ESPHome API client %s: unexpected error", peer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _framing(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> Transport | None:
        """The client's transport, after the Noise handshake when a key is set; None when
        it was refused (told why)."""
        indicator = (await reader.readexactly(1))[0]
        answer = refusal(indicator, encrypted=self._key is not None)
        if answer is not None:
            log.warning("ESPHome API client %s refused: it %s", peer,
                        "has no encryption key" if self._key else "wants encryption")  # fmt: skip
            writer.write(answer)
            await writer.drain()
            return None
        if self._key is None:
            return PlainTransport(reader, writer, started=True)
        from edgespeak.inlets.esphome.noise import handshake  # noiseprotocol: only with a key

        transport = await handshake(
            reader, writer, key=self._key, name=self.device.name, mac=self.device.mac_hex
        )
        await writer.drain()
        return transport

    def _broadcast(self, message: Any) -> None:
        for session in self.sessions:
            if session.subscribed:
                session.send(message)
