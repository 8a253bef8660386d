"""The media player entity: what Home Assistant sees and what its commands do.

One entity (object id ``speaker``) with PLAY_MEDIA, MEDIA_ANNOUNCE, VOLUME_SET, VOLUME_MUTE,
STOP and BROWSE_MEDIA (Home Assistant's own media browser). Its ``supported_formats`` ask for
16-bit mono WAV at the speech rate, so Home Assistant's ffmpeg proxy converts anything to
what plays without a resampling step or a reopened ALSA device.

State, always what is audible: PLAYING from an announcement's ``playing`` event (any inlet's:
an MQTT announcement is audible too) to its end, else IDLE; never ANNOUNCING or NONE, which
Home Assistant cannot map. Volume and mute are :class:`~edgespeak.speaking.volume.VolumeStore`'s,
shared with MQTT ``volume/set`` and the Home Assistant number entity, and persisted.

Commands: a media URL becomes an :class:`~edgespeak.base.announcement.Announcement` through
the scheduler like any other (``announce: true`` → priority ``high``: it interrupts a
``normal`` one, then what waited plays; otherwise ``normal``: it queues). STOP is the MQTT
stop: the playing one and every waiting one. A URL that is not http(s) fails at once with a
``failed`` event (``source: "url"``, the host only) and nothing else changes.
"""

from __future__ import annotations

import logging
import time
import uuid
import zlib
from collections.abc import Callable
from typing import Any

from edgespeak.audio.alsa import AlsaSink
from edgespeak.base.announcement import Announcement
from edgespeak.base.errors import MediaError
from edgespeak.base.events import TERMINAL, Event
from edgespeak.inlets.esphome.messages import (
    BROWSE_MEDIA,
    MEDIA_ANNOUNCE,
    PLAY_MEDIA,
    STOP,
    VOLUME_MUTE,
    VOLUME_SET,
    pb,
)
from edgespeak.inlets.homeassistant.state import NodeState
from edgespeak.scheduling.scheduler import Scheduler
from edgespeak.sources.url import check_url, url_host
from edgespeak.speaking.volume import VolumeStore

log = logging.getLogger(__name__)
OBJECT_ID = "speaker"
KEY = zlib.crc32(f"media_player.{OBJECT_ID}".encode())  # the entity's stable fixed32 key
FEATURES = PLAY_MEDIA | MEDIA_ANNOUNCE | VOLUME_SET | VOLUME_MUTE | STOP | BROWSE_MEDIA
TOPIC = "esphome"  # what the announcements' ``topic`` says (the rate limit is MQTT's)


class MediaPlayer:
    """The entity. ``rate_hz``: the speech rate, asked of Home Assistant's proxy.
    ``publish``: posts an event (as the daemon does for every announcement); ``changed``:
    asks for the MQTT state to be published again; :attr:`on_change` is called with the new
    MediaPlayerStateResponse whenever what it says changes (the server broadcasts it)."""

    def __init__(
        self,
        scheduler: Scheduler,
        sink: AlsaSink,
        volumes: VolumeStore,
        state: NodeState,
        publish: Callable[[Event], None],
        changed: Callable[[], None],
        *,
        rate_hz: int,
    ) -> None:
        self._scheduler = scheduler
        self._sink = sink
        self._volumes = volumes
        self._state = state
        self._publish = publish
        self._changed = changed
        self._rate_hz = rate_hz
        self._playing: str | None = None
        self._shown: tuple[int, float, bool] | None = None
        self.on_change: Callable[[Any], None] = lambda message: None
        volumes.watch(self._refresh)

    def entity(self) -> Any:
        """The ListEntitiesMediaPlayerResponse."""
        formats = [
            pb.MediaPlayerSupportedFormat(
                format="wav",
                sample_rate=self._rate_hz,
                num_channels=1,
                sample_bytes=2,
                purpose=purpose,
            )
            for purpose in (
                pb.MEDIA_PLAYER_FORMAT_PURPOSE_DEFAULT,
                pb.MEDIA_PLAYER_FORMAT_PURPOSE_ANNOUNCEMENT,
            )
        ]
        return pb.ListEntitiesMediaPlayerResponse(
            object_id=OBJECT_ID,
            key=KEY,
            name="",  # the device's name: the speaker is what this device is
            icon="mdi:speaker",
            supports_pause=False,  # clients of API < 1.11 derive the features from it
            feature_flags=FEATURES,
            supported_formats=formats,
        )

    def state_message(self) -> Any:
        """The MediaPlayerStateResponse as it stands."""
        state, volume, muted = self._now()
        return pb.MediaPlayerStateResponse(key=KEY, state=state, volume=volume, muted=muted)

    def observe(self, event: Event) -> None:
        """Take in one announcement event (any inlet's): playing or not."""
        if event.state == "playing":
            self._playing = event.id
        elif event.state in TERMINAL and event.id == self._playing:
            self._playing = None
        self._refresh()

    def command(self, request: Any) -> None:
        """Carry out a MediaPlayerCommandRequest (see the module docstring)."""
        if request.key != KEY:
            log.debug("ignoring a media player command for unknown key %#x", request.key)
            return
        if request.has_media_url:
            self.play(request.media_url, announce=request.has_announcement and request.announcement)
        if request.has_volume:
            self.set_volume(request.volume)
        if request.has_command:
            self._simple(request.command)

    def play(self, url: str, *, announce: bool) -> None:
        """Queue ``url`` (``announce``: priority high) or fail it at once if not http(s)."""
        ann_id = uuid.uuid4().hex[:12]
        host = url_host(url)
        try:
            check_url(url)
        except MediaError as exc:
            log.warning("media player: refusing a URL from Home Assistant: %s", exc)
            self._publish(Event(ann_id, "failed", source="url", error=str(exc), host=host))
            return
        log.info("media player: %s from %s as %s", "announce" if announce else "play", host, ann_id)
        ann = Announcement(
            text=f"media from {host}", id=ann_id, received_at=time.monotonic(), topic=TOPIC,
            priority="high" if announce else "normal", url=url,
        )  # fmt: skip
        self._scheduler.submit(ann)
        self._changed()

    def set_volume(self, volume: float) -> None:
        """Set the one volume (0.0-1.0, clamped); unmutes; kept across restarts."""
        volume = min(1.0, max(0.0, volume))
        self._sink.set_volume(volume)
        self._state.volume = volume
        self._volumes.save(volume)  # → _refresh
        log.info("volume set to %d %% by the media player", round(volume * 100))
        self._changed()

    def set_muted(self, muted: bool) -> None:
        """Mute (the sink plays at volume 0) or unmute; kept across restarts."""
        self._sink.set_volume(0.0 if muted else self._volume())
        self._volumes.save_muted(muted)  # → _refresh
        log.info("media player %s", "muted" if muted else "unmuted")

    def _simple(self, command: int) -> None:
        if command == pb.MEDIA_PLAYER_COMMAND_STOP:
            log.info("media player: stop")
            self._scheduler.stop()
            self._changed()
        elif command in (pb.MEDIA_PLAYER_COMMAND_MUTE, pb.MEDIA_PLAYER_COMMAND_UNMUTE):
            self.set_muted(command == pb.MEDIA_PLAYER_COMMAND_MUTE)
        else:
            name = pb.MediaPlayerCommand.Name(command) if command in _KNOWN else str(command)
            log.info("media player: ignoring unsupported command %s", name)

    def _volume(self) -> float:
        stored = self._volumes.volume
        return self._state.volume if stored is None else stored

    def _now(self) -> tuple[int, float, bool]:
        playing = self._playing is not None
        state = pb.MEDIA_PLAYER_STATE_PLAYING if playing else pb.MEDIA_PLAYER_STATE_IDLE
        return state, self._volume(), self._volumes.muted

    def _refresh(self) -> None:
        now = self._now()
        if now != self._shown:
            self._shown = now
            self.on_change(self.state_message())


_KNOWN = frozenset(pb.MediaPlayerCommand.values())
