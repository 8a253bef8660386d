"""Rhasspy Hermes on the daemon's link: ``hermes/tts/say`` is spoken and answered with
``sayFinished``; ``playBytes`` WAVs are played and answered with ``playFinished``.

Message shapes are :mod:`edgespeak.inlets.hermes.messages`'s. A reply is sent whatever the outcome
(spoken,
failed, interrupted, expired), as Rhasspy's own services do: its dialogue manager waits for it.
Hermes ids are not de-duplicated (Rhasspy sends a fresh one per request). A say that cannot
be read ends in a ``failed`` event (under its ``id`` when that could be read, else a made-up
one), whatever it holds. One for this site whose ``id`` and ``sessionId`` could be read (its
text, volume or language is bad: an empty text, say) is answered with ``sayFinished`` too, so
that the dialogue waiting for it goes on; one whose ids cannot be read gets none, having no
session to finish.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable

from edgespeak.base.announcement import Announcement
from edgespeak.base.errors import PayloadError
from edgespeak.base.events import TERMINAL, Event
from edgespeak.config import LimitsConfig
from edgespeak.inlets.hermes.messages import (
    HermesTopics,
    PlayBytes,
    Say,
    SayRefused,
    parse_play_bytes,
    parse_say,
    play_finished,
    say_finished,
)
from edgespeak.inlets.mqtt.link import Incoming, Route
from edgespeak.inlets.payload import unreadable

log = logging.getLogger(__name__)
Post = Callable[[str, bytes], None]


class HermesLink:
    """Routes for site ``site_id``; ``submit`` queues announcements, ``post(topic, payload)``
    publishes a reply, ``publish`` posts an event. Call :meth:`observe` with every event."""

    def __init__(
        self,
        site_id: str,
        submit: Callable[[Announcement], None],
        post: Post,
        publish: Callable[[Event], None],
        limits: LimitsConfig | None = None,
    ) -> None:
        self.topics = HermesTopics(site_id)  # raises ConfigError for a bad site id
        self._submit = submit
        self._post = post
        self._publish = publish
        self._limits = limits or LimitsConfig()
        self._says: dict[str, list[Say]] = defaultdict(list)
        self._plays: dict[str, list[PlayBytes]] = defaultdict(list)

    def routes(self) -> list[Route]:
        return [Route(self.topics.say, self.say), Route(self.topics.play_bytes, self.play_bytes)]

    def say(self, msg: Incoming) -> None:
        try:
            say = parse_say(
                msg.payload, site_id=self.topics.site_id, received_at=msg.received_at,
                topic=msg.topic, max_bytes=self._limits.max_payload_bytes,
                max_chars=self._limits.max_text_chars,
            )  # fmt: skip
        except PayloadError as exc:
            ann_id = exc.announcement_id or uuid.uuid4().hex[:12]
            log.warning("bad hermes/tts/say (id %s): %s", ann_id, exc)
            self._publish(Event(ann_id, "failed", error=str(exc)))
            if isinstance(exc, SayRefused):
                self._post(self.topics.say_finished, exc.reply)
            return
        except Exception as exc:  # a parser bug: this message still ends in an event
            ann_id = uuid.uuid4().hex[:12]
            log.exception("internal error reading a hermes/tts/say (id %s)", ann_id)
            self._publish(Event(ann_id, "failed", error=unreadable(exc)))
            return
        if say is None:
            return  # another site's
        ann = dataclasses.replace(say.announcement, id_given=False)
        self._says[ann.id].append(say)
        self._submit(ann)

    def play_bytes(self, msg: Incoming) -> None:
        try:
            play = parse_play_bytes(msg.topic, msg.payload, site_id=self.topics.site_id)
        except PayloadError as exc:
            request_id = exc.announcement_id or ""
            log.warning("bad playBytes %s: %s", request_id, exc)
            self._publish(Event(request_id or "playBytes", "failed", error=str(exc)))
            if request_id:
                undecoded = PlayBytes(request_id, self.topics.site_id, pcm=b"", rate_hz=0)
                self._post(self.topics.play_finished, play_finished(undecoded))
            return
        if play is None:
            return
        self._plays[play.request_id].append(play)
        ann = Announcement(
            text=f"playBytes {play.request_id}", id=play.request_id,
            received_at=msg.received_at, topic=self.topics.play_bytes, sound=play.pcm,
            sound_rate_hz=play.rate_hz,
        )  # fmt: skip
        self._submit(ann)

    def observe(self, event: Event) -> None:
        """Answer the Hermes request behind ``event`` once it is over."""
        if event.state not in TERMINAL:
            return
        if says := self._says.get(event.id):
            self._post(self.topics.say_finished, say_finished(says.pop(0)))
            if not says:
                del self._says[event.id]
        elif plays := self._plays.get(event.id):
            self._post(self.topics.play_finished, play_finished(plays.pop(0)))
            if not plays:
                del self._plays[event.id]
