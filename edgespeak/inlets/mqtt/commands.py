"""The node's own MQTT inputs: announce, stop, chime and volume messages → scheduler and sink.

Topics (see :class:`~edgespeak.inlets.mqtt.topics.Topics`):
``<prefix>/<node_id|all|group/NAME>/announce``
and ``…/stop``, ``<prefix>/<node_id>/chime`` (payload: a sound name, empty = ``[sounds]
default_chime``), ``<prefix>/<node_id>/volume/set`` (payload: percent 0-100). A bad message
is logged and reported (a ``failed`` event, or ``last_error`` in the state); nothing else is
affected. Every announce payload ends in an event, whatever it holds: a refusal names its
reason, and a parser that raised anything else (a bug) still fails it ("internal error
reading the payload: …", the traceback logged).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Callable

from edgespeak.audio.alsa import AlsaSink
from edgespeak.base.announcement import Announcement
from edgespeak.base.errors import PayloadError
from edgespeak.base.events import Event
from edgespeak.config import Settings
from edgespeak.inlets.homeassistant.state import NodeState
from edgespeak.inlets.mqtt.group_plan import mark_group
from edgespeak.inlets.mqtt.link import Incoming, Route
from edgespeak.inlets.mqtt.topics import Topics
from edgespeak.inlets.payload import parse_payload, unreadable
from edgespeak.inlets.rate_limit import TopicRateLimit
from edgespeak.scheduling.scheduler import Scheduler
from edgespeak.speaking.chimes import ChimeError, Chimes
from edgespeak.speaking.volume import VolumeStore

log = logging.getLogger(__name__)


class Commands:
    """Handlers for the node's topics. ``publish`` posts events; ``changed`` asks for the
    state to be published again."""

    def __init__(
        self,
        settings: Settings,
        scheduler: Scheduler,
        chimes: Chimes,
        sink: AlsaSink,
        volumes: VolumeStore,
        state: NodeState,
        publish: Callable[[Event], None],
        changed: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._scheduler = scheduler
        self._chimes = chimes
        self._sink = sink
        self._volumes = volumes
        self._state = state
        self._publish = publish
        self._changed = changed
        self._rate = TopicRateLimit(settings.limits.rate)
        self._refused: set[str] = set()  # topics whose refusal was logged, until one passes
        self._tasks: set[asyncio.Task[None]] = set()  # chimes being loaded

    def routes(self, topics: Topics) -> list[Route]:
        """The routes of this node's topics."""
        return (
            [Route(topic, self.announce) for topic in topics.announce]
            + [Route(topic, self.stop) for topic in topics.stop]
            + [Route(topics.chime, self.chime), Route(topics.volume_set, self.volume)]
        )

    def announce(self, msg: Incoming) -> None:
        """Parse and queue one announcement. Its TTL becomes the smaller of the message's
        remaining MQTT 5 expiry and its ``ttl_s`` (payload, else ``[daemon] ttl_s``).

        When nothing is playing or waiting, the sink is primed first, before the payload is
        read (:meth:`AlsaSink.prime`): the ALSA writer takes back the keep-open silence (or
        prepares a drained device) while the announcement is parsed, queued and looked up,
        so its first frame is written to a ready device. A message that turns out not to
        play costs the keep-open silence a gap of one period at most."""
        if self._scheduler.idle:
            self._sink.prime()
        limits = self._settings.limits
        try:
            ann = parse_payload(
                msg.payload, received_at=msg.received_at, topic=msg.topic,
                max_bytes=limits.max_payload_bytes, max_chars=limits.max_text_chars,
            )  # fmt: skip
        except PayloadError as exc:
            ann_id = exc.announcement_id or uuid.uuid4().hex[:12]
            log.warning("bad payload on %s (id %s): %s", msg.topic, ann_id, exc)
            self._publish(Event(ann_id, "failed", error=str(exc)))
            return
        except Exception as exc:  # a parser bug: this message still ends in an event
            ann_id = uuid.uuid4().hex[:12]
            log.exception("internal error reading a payload on %s (id %s)", msg.topic, ann_id)
            self._publish(Event(ann_id, "failed", error=unreadable(exc)))
            return
        if msg.expiry_s is not None:
            ttl_s = ann.ttl_s if ann.ttl_s is not None else self._settings.daemon.ttl_s
            ann = dataclasses.replace(ann, ttl_s=min(ttl_s, msg.expiry_s))
        self.submit(mark_group(ann, msg, self._settings))

    def submit(self, ann: Announcement) -> None:
        """Hand ``ann`` to the scheduler and refresh the state (queue length); over the rate
        limit of its topic, it fails instead ("rate limit: …")."""
        if not self._rate.allow(ann.topic):
            reason = self._rate.refusal(ann.topic)
            if ann.topic not in self._refused:  # one line per burst, not one per message
                self._refused.add(ann.topic)
                log.warning("%s; refusing until the rate drops", reason)
            self._publish(Event(ann.id, "failed", error=reason))
            return
        self._refused.discard(ann.topic)
        self._scheduler.submit(ann)
        self._changed()

    def stop(self, msg: Incoming) -> None:
        """Stop the playing announcement and drop the waiting ones (payload ignored)."""
        self._scheduler.stop()
        self._changed()

    def chime(self, msg: Incoming) -> None:
        """Play a chime on its own (the Home Assistant "test chime" button). A chime's first
        use reads and decodes its file in a thread (:meth:`Chimes.load`), then it is queued;
        an unknown or unreadable one gets a ``failed`` event."""
        task = asyncio.get_running_loop().create_task(self._chime(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _chime(self, msg: Incoming) -> None:
        name = msg.payload.decode("utf-8", errors="replace").strip()
        name = name or self._settings.sounds.default_chime
        ann_id = uuid.uuid4().hex[:12]
        rate_hz = self._settings.tts.rate_hz  # the speech rate: the device stays open
        try:
            pcm = await self._chimes.load(name, rate_hz)
        except ChimeError as exc:
            log.warning("chime request on %s: %s", msg.topic, exc)
            self._publish(Event(ann_id, "failed", error=str(exc)))
            return
        ann = Announcement(
            text=f"chime {name}", id=ann_id, received_at=msg.received_at, topic=msg.topic,
            sound=pcm, sound_rate_hz=rate_hz,
        )  # fmt: skip
        self.submit(ann)

    def volume(self, msg: Incoming) -> None:
        """Set the device volume from a percentage, keep it for the next start, show it."""
        try:
            volume = parse_volume(msg.payload)
        except ValueError as exc:
            log.warning("volume request on %s: %s", msg.topic, exc)
            self._state.last_error = f"volume: {exc}"
            self._changed()
            return
        self._sink.set_volume(volume)
        self._volumes.save(volume)
        self._state.volume = volume
        log.info("volume set to %d %%", round(volume * 100))
        self._changed()


def parse_volume(payload: bytes) -> float:
    """A ``volume/set`` payload (a number of percent, 0-100, e.g. ``65`` or ``"65.5"``) as
    0.0-1.0. Raises ValueError saying what is wrong."""
    text = payload.decode("utf-8", errors="replace").strip()
    try:
        percent = float(text)
    except ValueError:
        raise ValueError(f"volume must be a number of percent 0-100, got {text[:40]!r}") from None
    if not 0 <= percent <= 100:
        raise ValueError(f"volume must be within 0-100 %, got {percent:g}")
    return percent / 100
