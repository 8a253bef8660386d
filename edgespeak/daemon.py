"""``edgespeak run``: the supervisor tying the broker link, the TTS client and the player together.

MQTT messages are handled on arrival (:mod:`edgespeak.inlets.mqtt.commands`,
:mod:`edgespeak.inlets.hermes.routes`; a bad payload yields a ``failed`` event at once) and
announcements go to the :class:`~edgespeak.scheduling.scheduler.Scheduler` (priorities,
preemption, TTL, duplicates, stop), which speaks them one at a time. With ``[esphome]
enabled``, Home Assistant's ESPHome integration connects too
(:mod:`edgespeak.inlets.esphome`): its media player's URLs go to the same scheduler, and
it follows every event. Every event is published,
updates the retained node state and answers Hermes. Home Assistant discovery is published at
every connection and when Home Assistant's status topic says ``online``. What is disabled is
not imported (Hermes, Cartesia, ESPHome, discovery); start-up's memory is settled once ready,
and memory is given back each time the node goes idle (:mod:`edgespeak.base.memory`).

systemd (:mod:`edgespeak.base.systemd`): ``READY=1`` once the broker link is up and the TTS
connection warm, or after ``[daemon] ready_wait_s`` with ``STATUS=`` saying what is degraded;
``WATCHDOG=1`` only while every task runs and the ALSA writer is not stuck in one call for
``AUDIO_STALL_S``; ``STOPPING=1`` on SIGTERM/SIGINT.

Lifecycle: task groups own every task. The broker link's group encloses the others', so the
link is the last to go. On stop the scheduler is closed (the playing announcement and the
waiting ones end ``interrupted``, newcomers fail), the other tasks are cancelled, the events
still in the outbox are published, then ``offline`` (retained), and only then is the link
cancelled and the PCM closed. A task that crashes makes its group cancel the rest; the link
still publishes what it holds and ``offline`` (when the crashed task is the link itself, the
broker publishes the will), and :func:`run` logs the crash and returns exit code 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

from edgespeak import __version__
from edgespeak.audio.alsa import AlsaSink
from edgespeak.base import memory
from edgespeak.base.announcement import Announcement
from edgespeak.base.events import Event
from edgespeak.base.systemd import Notifier, watchdog_loop
from edgespeak.config import Settings
from edgespeak.group.speaker import GroupSpeaker
from edgespeak.inlets.homeassistant.state import NodeState
from edgespeak.inlets.mqtt.commands import Commands
from edgespeak.inlets.mqtt.group import GroupInlet
from edgespeak.inlets.mqtt.group_plan import GroupRoutes, Roster
from edgespeak.inlets.mqtt.link import Incoming, MqttLink, Route
from edgespeak.inlets.mqtt.topics import Topics
from edgespeak.providers.client import TtsClient
from edgespeak.providers.factory import make_client
from edgespeak.scheduling.scheduler import Scheduler
from edgespeak.sources.cache import PhraseCache
from edgespeak.sources.fallback import Fallback, fallback_engine
from edgespeak.sources.synthesis import Synthesizer
from edgespeak.sources.warmer import PhraseWarmer
from edgespeak.speaking.chimes import Chimes
from edgespeak.speaking.speaker import Speaker
from edgespeak.speaking.volume import VolumeStore

if TYPE_CHECKING:  # imported at run time only when enabled: a disabled inlet costs no memory
    from edgespeak.inlets.esphome.server import EsphomeServer
    from edgespeak.inlets.hermes.routes import HermesLink

log = logging.getLogger(__name__)
AUDIO_STALL_S = 10.0  # one blocking ALSA call longer than this: the writer is wedged
STOP_WAIT_S = 5.0  # at most this long for the playing announcement to end on stop (fade-out)
STATE_REFRESH_S = 30.0  # state re-read (cache entries, provider) at least this often


class Daemon:
    """Runs until :meth:`stop` (or SIGTERM/SIGINT when started through :func:`run`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.state = NodeState()
        self.volumes = VolumeStore(settings.daemon.state_dir)
        self.notifier = Notifier()
        self._link: MqttLink | None = None
        self._hermes: HermesLink | None = None
        self._esphome: EsphomeServer | None = None
        self._stopping = asyncio.Event()
        self._state_dirty = asyncio.Event()
        self._last_state: bytes | None = None
        # the group's membership and clock (docs/protocols.md §15); its routes, connection
        # hook and task are wired below where the others are
        self.group_inlet = GroupInlet(settings, self._post_group, self._send_now)

    def stop(self) -> None:
        """Ask the daemon to shut down gracefully."""
        self._stopping.set()

    async def run(self) -> None:
        """Serve until stopped. The TTS connection is warmed at once, before any announcement;
        configured phrases are pre-warmed into the cache in the background."""
        s = self.settings
        a = s.audio
        stored = self.volumes.load()
        self.state.volume = a.volume if stored is None else stored
        sink = AlsaSink(
            a.device, period_ms=a.period_ms, buffer_ms=a.buffer_ms, queue_chunks=a.queue_chunks,
            lead_in_ms=a.lead_in_ms, fade_ms=a.fade_ms, keep_open_s=a.keep_open_s,
            volume=0.0 if self.volumes.muted else self.state.volume, mixer=a.mixer,
        )  # fmt: skip
        cache = PhraseCache(s.cache.dir, max_bytes=s.cache.max_bytes) if s.cache.enabled else None
        tts = make_client(s)
        tts.on_reachable_change(self._state_dirty.set)  # the state's provider_reachable
        try:
            async with tts:
                synth = Synthesizer(tts, s.tts.format, s.tts.rate_hz, cache)
                chimes = Chimes(s.sounds.dir)
                fallback = fallback_engine(s)
                if fallback is not None:  # a Piper worker loads its voice meanwhile
                    fallback_started = asyncio.create_task(fallback.start(), name="fallback")
                speaker = Speaker(s, synth, tts.url, sink, cache, fallback, self._publish, chimes)
                group_synth = Synthesizer(tts, s.tts.format, s.tts.rate_hz, None)
                grouped = self._group(speaker, group_synth, tts.url, sink, cache, fallback)
                scheduler = Scheduler(
                    grouped.speak, self._publish, queue_max=s.daemon.queue_max,
                    ttl_s=s.daemon.ttl_s, dedup_window_s=s.daemon.dedup_window_s,
                    on_internal_error=self._internal_error(speaker), prepare=grouped.prepare,
                )  # fmt: skip
                commands = Commands(
                    s, scheduler, chimes, sink, self.volumes, self.state, self._publish,
                    self._state_dirty.set,
                )  # fmt: skip
                group_routes = GroupRoutes(s, grouped, commands.stop).routes()
                routes = group_routes + self._routes(commands)  # group stop before the node's
                self._link = link = MqttLink(s, routes, self._on_connected)
                warmer = None
                if cache is not None and s.cache.phrases:
                    warmer = PhraseWarmer(s, synth, tts.url, cache, fallback=fallback)
                try:
                    async with asyncio.TaskGroup() as group:  # the broker link outlives the rest
                        link_task = group.create_task(link.run(), name="mqtt")
                        try:
                            await self._serve(link_task, scheduler, warmer, cache, tts, sink)
                        finally:  # stopped, or a task crashed: the last events, then offline
                            await link.close()
                            link_task.cancel()
                finally:
                    await synth.close()
                    await group_synth.close()
                    if fallback is not None:  # the Piper worker, if any, stops with the daemon
                        fallback_started.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await fallback_started
                        await fallback.close()
        finally:
            await asyncio.to_thread(sink.close)
            await asyncio.to_thread(self.volumes.close)
            if cache is not None:
                cache.close()
            self.notifier.close()
            log.info("stopped")

    async def _serve(
        self,
        link_task: asyncio.Task[None],
        scheduler: Scheduler,
        warmer: PhraseWarmer | None,
        cache: PhraseCache | None,
        tts: TtsClient,
        sink: AlsaSink,
    ) -> None:
        """Run every task but the broker link's in one TaskGroup until :meth:`stop`, then close
        the scheduler (each announcement gets its last event: the playing and waiting ones
        ``interrupted``) and cancel the rest. A task that crashes makes the group cancel the
        others and raise ExceptionGroup."""
        assert self._link is not None
        async with asyncio.TaskGroup() as group:
            scheduler_task = group.create_task(scheduler.run(), name="scheduler")
            workers = [group.create_task(self._report_state(scheduler, cache, tts), name="state")]
            workers.append(group.create_task(self.group_inlet.run(), name="group-clock"))
            if warmer is not None:
                workers.append(group.create_task(warmer.run(tts), name="warmer"))
            if self.settings.esphome.enabled:
                esphome = self._serve_esphome(scheduler, sink)
                workers.append(group.create_task(esphome, name="esphome"))
            watched = [link_task, scheduler_task, *workers]

            def healthy() -> bool:
                return not any(t.done() for t in watched) and sink.stalled_s() < AUDIO_STALL_S

            helpers = [
                group.create_task(self._notify_ready(self._link, tts), name="ready"),
                group.create_task(watchdog_loop(self.notifier, healthy), name="watchdog"),
            ]
            await self._stopping.wait()
            self.notifier.stopping()
            scheduler.close("the daemon is stopping")
            _, late = await asyncio.wait({scheduler_task}, timeout=STOP_WAIT_S)
            if late:
                log.warning("the playing announcement did not stop within %g s", STOP_WAIT_S)
            for task in [scheduler_task, *workers, *helpers]:
                task.cancel()

    def _group(
        self, speaker: Speaker, synth: Synthesizer, endpoint: str, sink: AlsaSink,
        cache: PhraseCache | None, fallback: Fallback | None,
    ) -> GroupSpeaker:  # fmt: skip
        """Group playback (issue 16): the group speaker the scheduler calls."""
        inlet = self.group_inlet
        roster = Roster(inlet.members)
        group = GroupSpeaker(self.settings, speaker, synth, endpoint, sink, cache, fallback,
                             self._publish, self._send, inlet.clock, roster)  # fmt: skip
        inlet.on_change = group.members_changed
        return group

    def _send(self, topic: str, payload: bytes, qos: int) -> None:
        """Publish for the group: plans and relay, past the outbox."""
        assert self._link is not None
        self._link.send(topic, payload, qos)

    def _routes(self, commands: Commands) -> list[Route]:
        s = self.settings
        routes = commands.routes(self.topics) + self.group_inlet.routes()
        if s.homeassistant.enabled:
            routes.append(Route(s.homeassistant.status_topic, self._on_ha_status, retained=True))
        if s.hermes.enabled:
            from edgespeak.inlets.hermes.routes import HermesLink

            self._hermes = HermesLink(
                s.hermes.site_id, commands.submit, self._post, self._publish, s.limits
            )
            routes += self._hermes.routes()
        return routes

    async def _serve_esphome(self, scheduler: Scheduler, sink: AlsaSink) -> None:
        """Home Assistant's ESPHome native API (the media player), until cancelled."""
        from edgespeak.inlets.esphome.server import EsphomeServer

        self._esphome = EsphomeServer(
            self.settings, scheduler, sink, self.volumes, self.state, self._publish,
            self._state_dirty.set,
        )  # fmt: skip
        await self._esphome.run()

    def _post(self, topic: str, payload: bytes) -> None:
        assert self._link is not None
        self._link.post(topic, payload)

    def _publish(self, event: Event) -> None:
        """Every announcement event: published, shown in the state, answered to Hermes."""
        assert self._link is not None
        self._link.post_event(event)
        self.state.observe(event)
        if self._hermes is not None:
            self._hermes.observe(event)
        if self._esphome is not None:
            self._esphome.observe(event)
        self._state_dirty.set()

    def _post_group(self, topic: str, payload: bytes, retain: bool) -> None:
        assert self._link is not None
        self._link.post(topic, payload, retain=retain)

    def _send_now(self, topic: str, build: Callable[[], bytes]) -> None:
        assert self._link is not None
        self._link.send_now(topic, build)

    def _on_connected(self) -> None:
        self.group_inlet.connected()
        if self.settings.homeassistant.enabled:
            self._publish_discovery()
        self._last_state = None  # publish the state again, whatever it was
        self._state_dirty.set()

    def _on_ha_status(self, msg: Incoming) -> None:
        from edgespeak.inlets.homeassistant.discovery import is_birth

        if is_birth(msg.topic, msg.payload, self.settings):
            log.info("Home Assistant is online: publishing discovery again")
            self._on_connected()

    def _publish_discovery(self) -> None:
        from edgespeak.inlets.homeassistant.discovery import discovery_messages

        assert self._link is not None
        for topic, payload in discovery_messages(self.settings, self.topics, version=__version__):
            self._link.post(topic, payload, retain=True)

    async def _report_state(
        self, scheduler: Scheduler, cache: PhraseCache | None, tts: TtsClient
    ) -> None:
        """Publish the retained state whenever it changes (re-read at least every
        ``STATE_REFRESH_S`` seconds for what changes without an event), while the broker link
        is up: on (re)connect it is published again after the discovery messages.

        The cache's entries are counted again (in a worker thread, under the index lock) only
        once nothing plays or waits, or at the refresh: phrases are stored as an announcement
        ends, and counting as one arrived took the lock and a core from its cache lookup."""
        assert self._link is not None
        was_speaking = False
        while True:
            refresh = False
            try:
                async with asyncio.timeout(STATE_REFRESH_S):
                    await self._state_dirty.wait()
            except TimeoutError:
                refresh = True
            self._state_dirty.clear()
            if not self._link.up.is_set():  # published on connect, after the discovery
                continue
            self.state.queue = scheduler.queue_length
            self.state.provider_reachable = tts.reachable
            if cache is not None and (refresh or not self.state.speaking):
                self.state.cache_entries = await asyncio.to_thread(cache.count)
            payload = self.state.to_json()
            if payload != self._last_state:
                self._last_state = payload
                self._link.post(self.topics.state, payload, retain=True)
                self.notifier.status(self._summary())
            if was_speaking and not self.state.speaking:  # idle again: memory back to the system
                await asyncio.to_thread(memory.release)
            was_speaking = self.state.speaking

    def _summary(self) -> str:
        st = self.state
        return (
            f"{'speaking' if st.speaking else 'idle'}, {st.queue} waiting, "
            f"broker {'up' if self._link and self._link.up.is_set() else 'down'}, "
            f"TTS {'reachable' if st.provider_reachable else 'unreachable'}"
        )

    async def _notify_ready(self, link: MqttLink, tts: TtsClient) -> None:
        """``READY=1`` once the broker link is up and the TTS connection warm, or after
        ``[daemon] ready_wait_s`` seconds, degraded, with ``STATUS=`` saying what is missing."""
        try:
            async with asyncio.timeout(self.settings.daemon.ready_wait_s):
                await link.up.wait()
                await tts.wait_up()
        except TimeoutError:
            missing = [
                what
                for what, ok in (("broker", link.up.is_set()), ("TTS provider", tts.reachable))
                if not ok
            ]
            status = f"degraded: {' and '.join(missing)} unreachable; retrying"
            if tts.refusal is not None:  # final (401/403): nothing is retrying it
                reach = "; broker unreachable, retrying" if not link.up.is_set() else ""
                status = f"degraded: TTS provider refused: {tts.refusal}{reach}"
            log.warning("running %s", status)
            self.notifier.ready(status)
        else:
            self.notifier.ready("ready: broker connected, TTS connection warm")
        await asyncio.to_thread(memory.settle_startup)  # start-up's garbage freed, the rest frozen

    @staticmethod
    def _internal_error(speaker: Speaker) -> Callable[[Announcement, BaseException], None]:
        def report(ann: Announcement, exc: BaseException) -> None:
            # A bug must cost one announcement, not the daemon.
            log.error("internal error speaking %s", ann.id, exc_info=exc)
            speaker.fail(ann, f"internal error: {type(exc).__name__}: {exc}")

        return report


async def run(settings: Settings) -> int:
    """Run a daemon with SIGTERM/SIGINT handlers installed. Returns the exit code: 0 once
    stopped, 1 when one of its tasks crashed (logged, CRITICAL, with the traceback)."""
    daemon = Daemon(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stop)
    try:
        await daemon.run()
    except ExceptionGroup as crashed:
        for exc in _leaves(crashed):
            log.critical("a daemon task crashed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        return 1
    return 0


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions in ``group`` and the groups nested in it."""
    return [
        leaf
        for exc in group.exceptions
        for leaf in (_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    ]
