"""The daemon's broker connection: subscribe to its routes, publish through an outbox, say
``online``/``offline``, reconnect forever.

Routes map topic filters to handlers: the daemon's announce/stop/chime/volume topics, Home
Assistant's status topic, the Hermes topics. Everything is subscribed at QoS 1 on a persistent
session (see :mod:`edgespeak.inlets.mqtt.connect`). Retained messages are dropped on routes that do
not ask
for them: a retained announcement would replay old speech at every start.

Out: events, retained state, discovery and Hermes replies are queued in one outbox and
published in order by a task of the current connection, never on the audio path (a PUBACK
round trip measured ~40 ms). ``<prefix>/<node_id>/availability`` is ``online`` (retained) once
subscribed and ``offline`` on a clean stop; ``offline`` is also the MQTT will, so a killed
daemon reads ``offline`` too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from edgespeak.base.backoff import Backoff
from edgespeak.base.events import Event
from edgespeak.config import Settings
from edgespeak.inlets.mqtt.connect import (
    ProtocolChoice,
    connected,
    describe_failure,
    message_expiry_s,
    protocol_name,
)
from edgespeak.inlets.mqtt.topics import Topics

log = logging.getLogger(__name__)
OUTBOX_MESSAGES = 1000  # at least; see outbox_capacity
SEND_WINDOW = 8  # send(): messages handed to the client and not yet acknowledged, at most
EVENTS_PER_ANNOUNCEMENT = 4  # received, playing, finished, and one more (a failed newcomer)


def outbox_capacity(queue_max: int) -> int:
    """Messages the outbox holds before dropping the oldest: ``OUTBOX_MESSAGES``, or the events
    of a full announcement queue (``[daemon] queue_max``) if more, so that a burst the queue
    accepts never loses its events while the broker acknowledges them one by one."""
    return max(OUTBOX_MESSAGES, EVENTS_PER_ANNOUNCEMENT * queue_max)


@dataclass(frozen=True)
class Incoming:
    """One message received on a route. ``received_at``: ``time.monotonic()`` seconds at
    receipt; ``expiry_s``: the remaining MQTT 5 Message Expiry Interval in seconds (None:
    none, or MQTT 3.1.1)."""

    topic: str
    payload: bytes
    received_at: float
    expiry_s: float | None
    retain: bool


@dataclass(frozen=True)
class Route:
    """Messages on topics matching ``filter`` (MQTT wildcards allowed) go to ``handle``;
    retained ones only when ``retained`` is True."""

    filter: str
    handle: Callable[[Incoming], None]
    retained: bool = False


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes
    retain: bool


class MqttLink:
    """Runs the broker connection for ``routes``; ``on_connected()`` is called after every
    (re)connection, once subscribed and ``online`` (publish discovery and state from it)."""

    def __init__(
        self,
        settings: Settings,
        routes: list[Route],
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self.topics = Topics.from_settings(settings)
        self._routes = routes
        self._on_connected = on_connected
        self._client: aiomqtt.Client | None = None
        self._outbox: asyncio.Queue[Outgoing] = asyncio.Queue(
            outbox_capacity(settings.daemon.queue_max)
        )
        self._unsent: Outgoing | None = None  # taken from the outbox, not yet acknowledged
        self._retained: dict[str, bytes] = {}  # newest payload of each retained topic queued
        self.protocol = ProtocolChoice(settings)
        self.up = asyncio.Event()  # set while connected and subscribed
        self._last_problem: str | None = None
        self._sending: set[asyncio.Task[None]] = set()  # send_now's publications under way
        self._to_send: deque[tuple[str, bytes, int]] = deque()  # send's, not yet handed over
        self._sender: asyncio.Task[None] | None = None

    @property
    def _where(self) -> str:
        return f"{self._settings.mqtt.host}:{self._settings.mqtt.port}"

    def post(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Queue a QoS 1 publication without waiting for the broker. Posted while the broker
        is down, it is published after reconnect; past :func:`outbox_capacity` waiting the oldest
        is dropped with a warning. A retained one replaces the payload of one still queued
        for its topic (only the newest state matters), so a burst of announcements, each
        changing the state, does not fill the outbox with states and push events out."""
        if retain and topic in self._retained:
            self._retained[topic] = payload
            return
        if self._outbox.full():
            dropped = self._outbox.get_nowait()
            if dropped.retain:
                del self._retained[dropped.topic]
            log.warning("outbox full; dropped a message for %s", dropped.topic)
        if retain:
            self._retained[topic] = payload
        self._outbox.put_nowait(Outgoing(topic, payload, retain))

    def send_now(self, topic: str, build: Callable[[], bytes]) -> None:
        """Publish at QoS 0, not retained, past the outbox, for a payload that carries the
        time it is sent: ``build()`` makes it at the moment it is handed to the MQTT client
        (which writes it to the socket at the event loop's next turn). Dropped while
        disconnected, as QoS 0 allows."""
        client = self._client
        if client is None:
            return
        task = asyncio.create_task(self._send_now(client, topic, build), name="send-now")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    @staticmethod
    async def _send_now(client: aiomqtt.Client, topic: str, build: Callable[[], bytes]) -> None:
        try:
            await client.publish(topic, build(), qos=0)  # build() runs just before the hand-over
        except aiomqtt.MqttError as exc:
            log.debug("could not publish on %s: %s", topic, exc)

    def send(self, topic: str, payload: bytes, qos: int) -> None:
        """Publish at ``qos``, not retained, past the outbox (group plans and relay audio,
        which must not wait behind the events nor for each other's acknowledgement): handed
        to the MQTT client in call order, at most ``SEND_WINDOW`` unacknowledged at a time, so
        one topic's messages stay in order. Dropped while disconnected (worth nothing later)."""
        client = self._client
        if client is None:
            log.debug("not connected: dropped a message for %s", topic)
            return
        self._to_send.append((topic, payload, qos))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_all(client), name="send")

    async def _send_all(self, client: aiomqtt.Client) -> None:
        window: set[asyncio.Task[None]] = set()
        while self._to_send and self._client is client:
            topic, payload, qos = self._to_send.popleft()
            task = asyncio.create_task(self._send(client, topic, payload, qos), name="send-one")
            for held in (window, self._sending):
                held.add(task)
                task.add_done_callback(held.discard)
            if len(window) >= SEND_WINDOW:
                await asyncio.wait(window, return_when=asyncio.FIRST_COMPLETED)
        if self._client is not client:
            self._to_send.clear()

    @staticmethod
    async def _send(client: aiomqtt.Client, topic: str, payload: bytes, qos: int) -> None:
        try:
            await client.publish(topic, payload, qos=qos)
        except aiomqtt.MqttError as exc:
            log.debug("could not publish on %s: %s", topic, exc)

    def _newest(self, out: Outgoing) -> Outgoing:
        """``out`` just taken from the outbox; a retained one with its topic's newest payload."""
        if out.retain:
            return Outgoing(out.topic, self._retained.pop(out.topic), retain=True)
        return out

    def post_event(self, event: Event) -> None:
        """Queue ``event`` for ``<prefix>/<node_id>/event``."""
        self.post(self.topics.event, event.to_json())

    async def run(self) -> None:
        """Connect, serve, and reconnect forever (cancel to stop). Every failure to connect
        (unreachable, refused login, TLS) is retried with the jittered :class:`Backoff` (from
        0.5 s) capped at ``[mqtt] reconnect_max_s`` seconds; the backoff starts afresh after a
        connection.

        Raises ConfigError if the password file became unreadable since the config was loaded.
        """
        cap_s = self._settings.mqtt.reconnect_max_s
        while True:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(aiomqtt.MqttError),
                wait=Backoff(first_s=0.5, max_s=cap_s),
                before_sleep=self._log_retry,
            ):
                with attempt:
                    try:
                        await self._session()
                    except aiomqtt.MqttError:
                        # Being cancelled, aiomqtt's graceful disconnect may find the
                        # connection already gone and raise this instead: retrying would
                        # swallow the cancellation, and the daemon could never stop.
                        _raise_if_cancelled()
                        raise

    def _log_retry(self, state: RetryCallState) -> None:
        """First failure, or a different one than the last logged: WARNING; repeats: DEBUG."""
        attempt = state.attempt_number
        exc = state.outcome.exception() if state.outcome is not None else None
        problem = describe_failure(exc, self._where) if exc is not None else "unknown failure"
        new = attempt == 1 or problem != self._last_problem
        self._last_problem = problem
        log.log(logging.WARNING if new else logging.DEBUG, "%s (attempt %d)", problem, attempt)

    async def _session(self) -> None:
        """One connection: subscribe, announce ``online`` and dispatch messages until the
        connection drops (then return). Raises MqttError if it cannot connect."""
        topics = self.topics
        will = aiomqtt.Will(topics.availability, b"offline", qos=1, retain=True)
        identifier = f"edgespeak-{self._settings.node_id}"
        async with connected(
            self._settings, self.protocol, identifier=identifier, persistent=True, will=will
        ) as client:
            await client.subscribe([(route.filter, 1) for route in self._routes])
            await client.publish(topics.availability, b"online", qos=1, retain=True)
            _raise_if_cancelled()  # 3.11's wait_for, under both, may have lost it (see _publish)
            self._client = client
            self._last_problem = None
            self.up.set()
            log.info(
                "connected to broker %s with MQTT %s, listening on %s",
                self._where,
                protocol_name(self.protocol.version),
                ", ".join(topics.announce),
            )
            if self._on_connected is not None:
                self._on_connected()
            publisher = asyncio.create_task(self._publish(client))
            try:
                async for message in client.messages:
                    self._dispatch(message)
            except aiomqtt.MqttError as exc:
                log.warning("lost the broker %s: %s; reconnecting", self._where, exc)
                return  # connected once: the next attempt starts a fresh backoff
            finally:
                self._client = None
                self.up.clear()
                publisher.cancel()
                # Wait without raising its CancelledError: suppressing that one would also
                # swallow a cancellation of this task arriving meanwhile, and the link would
                # reconnect instead of stopping (the daemon then never exits).
                await asyncio.wait({publisher})
                if not publisher.cancelled() and (failure := publisher.exception()) is not None:
                    if not isinstance(failure, aiomqtt.MqttError):
                        raise failure

    def _dispatch(self, message: aiomqtt.Message) -> None:
        received_at = time.monotonic()
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            payload = str(payload).encode() if payload is not None else b""
        incoming = Incoming(
            str(message.topic), bytes(payload), received_at, message_expiry_s(message),
            bool(message.retain),
        )  # fmt: skip
        for route in self._routes:
            if message.topic.matches(route.filter):
                if message.retain and not route.retained:
                    log.info("ignoring a retained message on %s", message.topic)
                    return
                try:
                    route.handle(incoming)
                except Exception:  # a bug must cost this message, not the broker link
                    log.exception("internal error handling a message on %s", message.topic)
                return
        log.debug("no route for %s", message.topic)

    async def _publish(self, client: aiomqtt.Client) -> None:
        """Publish the outbox in order, each until the broker acknowledged it. The one in
        flight when the connection drops (this task is then cancelled, or the publish fails)
        stays in ``_unsent`` and goes first on the next connection: sent twice at worst.

        Stops once ``client`` is no longer the link's: on Python 3.11 a cancellation that
        meets the PUBACK is lost inside aiomqtt's ``asyncio.wait_for`` (fixed in 3.12), and
        this task would then wait on the outbox for ever, the session waiting for it."""
        while self._client is client:
            if self._unsent is None:
                self._unsent = self._newest(await self._outbox.get())
            out = self._unsent
            await client.publish(out.topic, out.payload, qos=1, retain=out.retain)
            self._unsent = None

    async def close(self) -> None:
        """Publish what is left in the outbox, then ``offline`` (retained), if connected; the
        connection's context exit then disconnects."""
        if self._client is None:
            return
        try:
            while not self._outbox.empty():
                out = self._newest(self._outbox.get_nowait())
                await self._client.publish(
                    out.topic, out.payload, qos=1, retain=out.retain, timeout=2
                )
            await self._client.publish(
                self.topics.availability, b"offline", qos=1, retain=True, timeout=2
            )
        except aiomqtt.MqttError as exc:
            log.debug("could not publish offline: %s", exc)


def _raise_if_cancelled() -> None:
    """Raise CancelledError if the current task has been asked to stop (``cancel()`` called
    and not withdrawn), even though the exception itself got lost on the way."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
