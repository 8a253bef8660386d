"""The broker link (aiomqtt): subscribe to announce topics, publish events and availability.

Topics (``<prefix>`` and ``<node_id>`` from config):
- in: ``<prefix>/<node_id>/announce`` and ``<prefix>/all/announce``, QoS 1;
- out: ``<prefix>/<node_id>/event`` (JSON events, QoS 1) and ``<prefix>/<node_id>/availability``
  (``online``/``offline``, retained; ``offline`` is also the MQTT will).
The session is persistent (clean session off, fixed client id) so QoS 1 announcements published
during a short disconnect are delivered after reconnect. Retained announcements are dropped:
they would replay old speech at every start. Reconnects by itself with jittered capped backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_random_exponential,
)

from edgespeak.config import Settings
from edgespeak.events import Event

log = logging.getLogger(__name__)

OnAnnounce = Callable[[bytes, str, float], None]
OUTBOX_EVENTS = 1000


@dataclass(frozen=True)
class Topics:
    """The topics of one node: its own, ``all``'s and those of its ``groups``."""

    prefix: str
    node_id: str
    groups: tuple[str, ...] = ()

    @property
    def _targets(self) -> list[str]:
        """The topic stems this node answers to."""
        stems = [f"{self.prefix}/{self.node_id}", f"{self.prefix}/all"]
        return stems + [f"{self.prefix}/group/{group}" for group in self.groups]

    @property
    def announce(self) -> list[str]:
        """Announce payloads (plain text or JSON), QoS 1."""
        return [f"{stem}/announce" for stem in self._targets]

    @property
    def stop(self) -> list[str]:
        """Stop the playing announcement and clear the queue (payload ignored)."""
        return [f"{stem}/stop" for stem in self._targets]

    @property
    def chime(self) -> str:
        """Play a chime (payload: a sound name; empty = ``[sounds] default_chime``)."""
        return f"{self.prefix}/{self.node_id}/chime"

    @property
    def volume_set(self) -> str:
        """Set the volume: payload a number 0-100 (percent); persisted across restarts."""
        return f"{self.prefix}/{self.node_id}/volume/set"

    @property
    def state(self) -> str:
        """Retained JSON state: speaking/idle, volume, queue length, cache entries, provider."""
        return f"{self.prefix}/{self.node_id}/state"

    @property
    def event(self) -> str:
        return f"{self.prefix}/{self.node_id}/event"

    @property
    def availability(self) -> str:
        return f"{self.prefix}/{self.node_id}/availability"


def make_client(settings: Settings, *, identifier: str | None, **kwargs: object) -> aiomqtt.Client:
    """An aiomqtt client for ``[mqtt]`` (host, port, credentials, keepalive).

    TCP_NODELAY is set: announcements and events are small messages where Nagle's algorithm
    meeting delayed ACKs costs ~40 ms each (paho does not set it).
    """
    mqtt = settings.mqtt
    return aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        username=mqtt.username,
        password=mqtt.password.get_secret_value() if mqtt.password else None,
        identifier=identifier,
        keepalive=mqtt.keepalive_s,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        **kwargs,  # type: ignore[arg-type]
    )


class MqttLink:
    """Runs the broker connection; calls ``on_announce(payload, topic, received_at)`` per
    non-retained announce message, ``received_at`` being ``time.monotonic()`` seconds, and
    ``on_stop()`` per non-retained message on a stop topic."""

    def __init__(
        self, settings: Settings, on_announce: OnAnnounce, on_stop: Callable[[], None]
    ) -> None:
        self._settings = settings
        self.topics = Topics(settings.mqtt.prefix, settings.node_id, settings.mqtt.groups)
        self._on_announce = on_announce
        self._on_stop = on_stop
        self._client: aiomqtt.Client | None = None
        self._outbox: asyncio.Queue[Event] = asyncio.Queue(OUTBOX_EVENTS)

    def post_event(self, event: Event) -> None:
        """Queue ``event`` for publishing (QoS 1) without waiting for the broker.

        Events never sit on the audio path: a PUBACK round trip measured ~40 ms here. Events
        posted while the broker is down are published after reconnect; past
        ``OUTBOX_EVENTS`` waiting, the oldest are dropped with a warning.
        """
        if self._outbox.full():
            dropped = self._outbox.get_nowait()
            log.warning("event outbox full; dropped event %s %s", dropped.id, dropped.state)
        self._outbox.put_nowait(event)

    async def _publish_events(self, client: aiomqtt.Client) -> None:
        while True:
            event = await self._outbox.get()
            try:
                await client.publish(self.topics.event, event.to_json(), qos=1)
            except aiomqtt.MqttError:
                self._outbox.put_nowait(event)  # keep it for the next connection
                raise

    async def run(self) -> None:
        """Connect, serve, and reconnect forever (cancel to stop)."""
        cap_s = self._settings.mqtt.reconnect_max_s
        while True:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(aiomqtt.MqttError),
                wait=wait_random_exponential(multiplier=0.5, max=cap_s),
                before_sleep=self._log_retry,
            ):
                with attempt:
                    await self._session()

    def _log_retry(self, state: RetryCallState) -> None:
        attempt = state.attempt_number
        exc = state.outcome.exception() if state.outcome is not None else None
        level = logging.WARNING if attempt == 1 else logging.DEBUG
        mqtt = self._settings.mqtt
        where = f"{mqtt.host}:{mqtt.port}"
        log.log(level, "broker %s unreachable (attempt %d): %s", where, attempt, exc)

    async def _session(self) -> None:
        """One connection. Raises MqttError if it cannot connect; returns when it drops."""
        will = aiomqtt.Will(self.topics.availability, b"offline", qos=1, retain=True)
        client = make_client(
            self._settings,
            identifier=f"edgespeak-{self._settings.node_id}",
            clean_session=False,
            will=will,
        )
        async with client:
            await client.subscribe(
                [(topic, 1) for topic in self.topics.announce + self.topics.stop]
            )
            await client.publish(self.topics.availability, b"online", qos=1, retain=True)
            self._client = client
            log.info("connected to broker, listening on %s", ", ".join(self.topics.announce))
            publisher = asyncio.create_task(self._publish_events(client))
            try:
                async for message in client.messages:
                    received_at = time.monotonic()
                    if message.retain:
                        log.info("ignoring retained announcement on %s", message.topic)
                        continue
                    if str(message.topic) in self.topics.stop:
                        self._on_stop()
                        continue
                    payload = message.payload
                    if not isinstance(payload, bytes | bytearray):
                        payload = str(payload).encode() if payload is not None else b""
                    self._on_announce(bytes(payload), str(message.topic), received_at)
            except aiomqtt.MqttError as exc:
                log.warning("lost the broker: %s; reconnecting", exc)
                return  # connected once: the next attempt starts a fresh backoff
            finally:
                self._client = None
                publisher.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await publisher

    async def close(self) -> None:
        """Publish what is left in the outbox and ``offline`` (retained), if connected; the
        context exit then disconnects."""
        if self._client is not None:
            try:
                while not self._outbox.empty():
                    event = self._outbox.get_nowait()
                    await self._client.publish(self.topics.event, event.to_json(), qos=1, timeout=2)
                await self._client.publish(
                    self.topics.availability, b"offline", qos=1, retain=True, timeout=2
                )
            except aiomqtt.MqttError as exc:
                log.debug("could not publish offline: %s", exc)
