"""Real parts for the tests: Mosquitto, the local TTS server, the daemon, ALSA file capture.

Every service is started here on a loopback ephemeral port and stopped after the test.
Readiness is waited for on the real condition (a port accepting, a line printed, a retained
``online`` message), never with a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from harness.homeassistant import HomeAssistant, HomeAssistantApi, ha_root
from harness.stack import (
    STARTUP_S,
    LocalServer,
    Mosquitto,
    PulseAudio,
    StackError,
    capture_alsa_conf,
    clean_env,
    edgespeak_command,
    free_port,
    stop_process,
)
from tests.helpers import server_audio

ROOT = Path(__file__).resolve().parent.parent
Broker = Mosquitto

# The Home Assistant end-to-end test of the ESPHome media player is collected once edgespeak has
# its ESPHome inlet (issue 18); until then the file would only fail on the missing module.
if importlib.util.find_spec("edgespeak.inlets.esphome") is None:
    collect_ignore = ["test_homeassistant_real_esphome.py"]


def base_env() -> dict[str, str]:
    return clean_env(PYTHONPATH=str(ROOT))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(free_port(), tmp_path)
    b.start()
    yield b
    b.stop()


@dataclass
class TtsServer:
    """``edgespeak serve`` as a subprocess on a fixed ephemeral port (restartable)."""

    port: int
    workdir: Path
    close_after_finish: bool = False
    server: LocalServer | None = None
    token: str | None = None  # the bearer token clients must send (restart to apply)
    voice: str = "en"  # [server] voice: espeak-ng, whose audio is the same every time

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/tts/live"

    def start(self) -> None:
        cfg = self.workdir / "server.toml"
        cfg.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {self.port}\nvoice = "{self.voice}"\n'
            f"close_after_finish = {str(self.close_after_finish).lower()}\n"
            + (f'token = "{self.token}"\n' if self.token else "")
        )
        self.server = LocalServer(cfg, self.workdir / "server.log", base_env())
        assert self.server.start() == self.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@pytest.fixture
def tts_server(tmp_path: Path) -> Iterator[TtsServer]:
    server = TtsServer(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


@dataclass
class AlsaCapture:
    """An ALSA ``file`` PCM over ``null`` (or, with ``pulse_server``, over a PulseAudio null
    sink, paced in real time): every byte handed to ALSA lands in ``path``."""

    conf: Path
    path: Path
    pulse_server: str | None = None

    @property
    def env(self) -> dict[str, str]:
        return capture_alsa_conf(self.conf, self.path, pulse_server=self.pulse_server)

    def read(self) -> bytes:
        return self.path.read_bytes() if self.path.exists() else b""


@pytest.fixture
def alsa_capture(tmp_path: Path) -> AlsaCapture:
    return AlsaCapture(tmp_path / "asound.conf", tmp_path / "capture.raw")


@pytest.fixture(scope="session")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseAudio]:
    """A private PulseAudio null sink for real-time paced playback (one per session)."""
    server = PulseAudio(tmp_path_factory.mktemp("pulse"))
    try:
        server.start()
    except StackError as exc:
        server.stop()
        pytest.fail(f"PulseAudio did not start: {exc}")
    yield server
    server.stop()


@dataclass
class Watcher:
    """An MQTT client on the daemon's topics: publishes announcements, collects events."""

    client: aiomqtt.Client
    node: str = "testnode"
    events: list[dict[str, Any]] = field(default_factory=list)
    online: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def pump(self) -> None:
        async for message in self.client.messages:
            topic = str(message.topic)
            if topic.endswith("/availability"):
                if message.payload == b"online":
                    self.online.set()
                else:
                    self.online.clear()
            elif topic.endswith("/event"):
                async with self._changed:
                    self.events.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type]
                    self._changed.notify_all()

    async def announce(self, payload: str | bytes, *, retain: bool = False) -> None:
        await self.client.publish(f"edgespeak/{self.node}/announce", payload, qos=1, retain=retain)

    async def wait(self, *states: str, ann_id: str | None = None, after: int = 0,
                   timeout_s: float = 30.0) -> dict[str, Any]:  # fmt: skip
        """The first event from index ``after`` on in one of ``states`` (of ``ann_id`` if given)."""
        async with asyncio.timeout(timeout_s), self._changed:
            while True:
                for event in self.events[after:]:
                    if event.get("state") in states and ann_id in (None, event.get("id")):
                        return event
                await self._changed.wait()

    async def say(self, text: str, ann_id: str) -> dict[str, Any]:
        """Announce ``text`` as JSON with ``ann_id``; its ``finished`` or ``failed`` event."""
        await self.announce(json.dumps({"text": text, "id": ann_id}))
        return await self.wait("finished", "failed", ann_id=ann_id)

    def states(self, ann_id: str) -> list[str]:
        return [e["state"] for e in self.events if e.get("id") == ann_id]


@contextlib.asynccontextmanager
async def watching(port: int, **options: Any) -> AsyncIterator[Watcher]:
    """A :class:`Watcher` connected to the broker on ``port`` (waits for the daemon online);
    ``options`` go to aiomqtt.Client (e.g. ``username``, ``password``)."""
    async with aiomqtt.Client("127.0.0.1", port, **options) as client:
        await client.subscribe("edgespeak/testnode/#", qos=1)
        watcher = Watcher(client)
        task = asyncio.create_task(watcher.pump())
        try:
            async with asyncio.timeout(STARTUP_S):
                await watcher.online.wait()
            yield watcher
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def daemon_config(
    path: Path, *, broker_port: int, tts_url: str, cache_dir: Path, fmt: str = "pcm",
    rate: int = 22050, device: str = "default", first_audio_timeout_ms: int = 5000,
    phrases: tuple[str, ...] = (), fallback: bool = True, fade_ms: float = 0,
    keep_open_s: float = 0, mqtt: dict[str, Any] | None = None,
) -> Path:  # fmt: skip
    """Write the daemon's TOML config for a test stack; returns ``path``. Fades and
    keep-open silence are off by default so captures compare byte for byte with the server's
    audio; the playback tests turn them on. ``mqtt``: more ``[mqtt]`` keys (or a ``port``
    replacing ``broker_port``), values written as JSON (valid TOML for str, number, bool)."""
    mqtt_keys = {"port": broker_port, "reconnect_max_s": 1.0} | (mqtt or {})
    mqtt_toml = "".join(f"{key} = {json.dumps(value)}\n" for key, value in mqtt_keys.items())
    path.write_text(
        f'node_id = "testnode"\n[mqtt]\n{mqtt_toml}'
        f'[tts]\nurl = "{tts_url}"\nformat = "{fmt}"\nsample_rate = {rate}\n'
        f"connect_timeout_s = 2.0\nfirst_audio_timeout_ms = {first_audio_timeout_ms}\n"
        "reconnect_max_s = 1.0\n"
        f'[cache]\ndir = "{cache_dir}"\nphrases = {json.dumps(list(phrases))}\n'
        f'[audio]\ndevice = "{device}"\nfade_ms = {fade_ms}\nkeep_open_s = {keep_open_s}\n'
        f"[fallback]\nenabled = {str(fallback).lower()}\n"
    )
    return path


async def logged(path: Path, needle: str, timeout_s: float = STARTUP_S) -> None:
    """Return once the log file at ``path`` contains ``needle``; TimeoutError after
    ``timeout_s`` seconds."""

    def poll() -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if path.exists() and needle in path.read_text(errors="replace"):
                return True
            time.sleep(0.02)  # polls the real condition, bounded by the deadline
        return False

    if not await asyncio.to_thread(poll):
        raise TimeoutError(f"{needle!r} not in {path} after {timeout_s:g} s")


@contextlib.contextmanager
def daemon_process(
    config: Path, capture: AlsaCapture, workdir: Path, env: dict[str, str] | None = None,
    wrap: tuple[str, ...] = (),
) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    """Run ``edgespeak run`` with ALSA going to ``capture`` (log in ``workdir/daemon.log``;
    ``env`` added to its environment; ``wrap``: a command that runs it, such as ``unshare``
    ending in an ``exec``, so the process keeps its PID)."""
    log = workdir / "daemon.log"
    proc = subprocess.Popen(
        [*wrap, *edgespeak_command("run", "--config", str(config), "--log-level", "DEBUG")],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        # never the machine's /var/lib/edgespeak: a stored volume there would scale every capture
        env=base_env()
        | {"EDGESPEAK_DAEMON__STATE_DIR": str(workdir / "state")}
        | capture.env
        | (env or {}),
    )
    try:
        yield proc
    finally:
        stop_process(proc)


@dataclass
class Stack:
    """Broker, TTS server and ALSA capture of one test, and the daemon's config for them."""

    broker: Mosquitto
    tts: TtsServer
    capture: AlsaCapture
    workdir: Path

    @property
    def cache_dir(self) -> Path:
        return self.workdir / "cache"

    @property
    def daemon_log(self) -> Path:
        return self.workdir / "daemon.log"

    def config(self, *, tts_url: str | None = None, **options: Any) -> Path:
        """The daemon's config for this stack; ``options`` as for :func:`daemon_config`."""
        return daemon_config(
            self.workdir / "daemon.toml",
            broker_port=self.broker.port,
            tts_url=tts_url or self.tts.url,
            cache_dir=self.cache_dir,
            **options,
        )

    @contextlib.asynccontextmanager
    async def daemon(self, config: Path | None = None) -> AsyncIterator[Watcher]:
        """Run the daemon (default config) and yield a watcher once it is online."""
        with daemon_process(config or self.config(), self.capture, self.workdir):
            async with watching(self.broker.port) as watcher:
                yield watcher

    async def sent(self, text: str, *, fmt: str = "pcm", rate: int = 22050) -> bytes:
        """What the TTS server sends for ``text`` (see tests.helpers.server_audio)."""
        return await server_audio(self.tts.url, text, fmt=fmt, rate=rate)


@pytest.fixture
def stack(
    broker: Mosquitto, tts_server: TtsServer, alsa_capture: AlsaCapture, tmp_path: Path
) -> Stack:
    return Stack(broker, tts_server, alsa_capture, tmp_path)


@pytest.fixture
def paced_stack(
    broker: Mosquitto, tts_server: TtsServer, pulse: PulseAudio, tmp_path: Path
) -> Stack:
    """A :class:`Stack` whose ALSA capture is paced in real time (file over PulseAudio)."""
    capture = AlsaCapture(tmp_path / "asound.conf", tmp_path / "capture.raw", pulse.server)
    return Stack(broker, tts_server, capture, tmp_path)


# --- Home Assistant itself (harness/homeassistant.py) -------------------------------------------


_ha_root: Path | StackError | None = None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the Home Assistant root before the first test that needs it, outside any test's
    timeout: the first build on a machine takes minutes (scripts/ha-root), later ones nothing.
    A failed build fails only the tests that need it (:func:`ha_root_dir`)."""
    global _ha_root
    if any("ha_root_dir" in getattr(item, "fixturenames", ()) for item in session.items):
        try:
            _ha_root = ha_root()
        except StackError as exc:
            _ha_root = exc


@pytest.fixture(scope="session")
def ha_root_dir() -> Path:
    """The root with Home Assistant (scripts/ha-root), built by pytest_collection_finish."""
    if isinstance(_ha_root, StackError):
        pytest.fail(f"the Home Assistant root could not be built: {_ha_root}")
    return _ha_root or ha_root()


@dataclass
class RunningHomeAssistant:
    """A started, onboarded Home Assistant: the process and a REST client with a token."""

    process: HomeAssistant
    api: HomeAssistantApi


@pytest.fixture
async def home_assistant(ha_root_dir: Path, tmp_path: Path) -> AsyncIterator[RunningHomeAssistant]:
    """Home Assistant (``http``, ``onboarding``, ``api``) from the cached root, config in
    ``tmp_path/homeassistant``, onboarded; stopped after the test."""
    process = HomeAssistant(ha_root_dir, tmp_path / "homeassistant")
    try:
        await asyncio.to_thread(process.start)
        async with aiohttp.ClientSession() as session:
            api = HomeAssistantApi(session, process.url)
            await api.onboard()
            yield RunningHomeAssistant(process, api)
    finally:
        await asyncio.to_thread(process.stop)
