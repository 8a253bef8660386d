"""Several rooms on one machine: N real daemons (``edgespeak run``) on one Mosquitto and one
``edgespeak serve`` (espeak-ng), each playing on its OWN private PulseAudio null sink (paced in
real time, harness.stack.PulseAudio) whose monitor is recorded with a time stamp on every read
(harness.monitor) from :meth:`Rooms.start` to :meth:`Rooms.stop_recordings`.

Announcements go to ``<prefix>/all/announce`` or ``<prefix>/group/<g>/announce`` through
:class:`harness.rooms_ears.Ears`, which also collects every node's events and counts the bytes
the broker carries. Afterwards :func:`measure` finds each node's first sound of each
announcement in its recording (the first sample at or above ``LEVEL``, -30 dBFS, between its
publish and the next one's): the **start spread** (max - min over the nodes, ms) and each
node's **heard latency** from the publish (ms; it includes the phrase's own lead-in, ~12 ms of
near-silence in espeak-ng's audio, alike on every node and in every mode).

The local server's TTS sessions are counted from its log (``session finished`` and ``session
failed`` lines at INFO, one per session that ended; a session whose client vanished mid-way
logs nothing): no hook was added to the server.

The ``[group]`` section (issue 16) is written only when asked for (``sync`` not None, or
``[group]`` keys for a node); an edgespeak without it raises StackError instead of starting
daemons that would refuse their config.
"""

from __future__ import annotations

import json
import shutil
import signal
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from harness.monitor import MonitorRecorder, Recording
from harness.paced_link import PacedLink
from harness.stack import (
    LocalServer,
    Mosquitto,
    PulseAudio,
    StackError,
    clean_env,
    edgespeak_command,
    free_port,
    stop_process,
)

PREFIX = "edgespeak"
LEVEL = 1000  # -30 dBFS: a sample this loud is an announcement's sound
UNLIMITED_RATE = "1000000/second"  # no per-topic rate limit in the way
SYS_INTERVAL_S = 1  # Mosquitto publishes its $SYS counters this often
SESSION_LINES = ("session finished", "session failed")


def has_group_config() -> bool:
    """True when this edgespeak's config has the ``[group]`` section (issue 16 built)."""
    from edgespeak.config.settings import Settings

    return "group" in Settings.model_fields


def toml(node_id: str, sections: Mapping[str, Mapping[str, Any]]) -> str:
    """A config file: ``node_id`` and ``sections`` (values written as JSON: valid TOML for
    strings, numbers, booleans and lists of strings)."""
    lines = [f'node_id = "{node_id}"']
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Node:
    """One room: a daemon ``node_id`` in ``groups``, its own sink and recording, its files in
    ``work`` (config, log, cache, state). ``group``: extra ``[group]`` keys for this node
    (e.g. ``test_clock_offset_s``)."""

    node_id: str
    groups: tuple[str, ...]
    work: Path
    group: dict[str, Any] = field(default_factory=dict)
    pulse: PulseAudio | None = None
    recorder: MonitorRecorder | None = None
    proc: subprocess.Popen[bytes] | None = None
    recording: Recording | None = None

    @property
    def config(self) -> Path:
        return self.work / "config.toml"

    @property
    def log(self) -> Path:
        return self.work / "daemon.log"

    @property
    def cache(self) -> Path:
        return self.work / "cache"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Rooms:
    """The whole set: broker, server, ``nodes`` (node id → its groups). ``sync``: the
    ``[group] sync`` of every node (None: not written, the build's default; False on an
    edgespeak without ``[group]`` writes nothing, which is today's behaviour); ``group``: node
    id → extra ``[group]`` keys. ``late``: nodes whose daemon :meth:`start` leaves stopped
    (:meth:`start_node` starts it; their sink is recorded from the beginning).
    ``tts_bytes_per_s``: the daemons reach the server through a :class:`PacedLink` at that
    rate (a provider streaming about as fast as speech: 44100 bytes/s is real time for the
    22050 Hz PCM asked for). Use as a
    context manager or call :meth:`start` / :meth:`stop`. Raises StackError."""

    def __init__(
        self,
        work: Path,
        nodes: Mapping[str, Sequence[str]],
        *,
        sync: bool | None = None,
        group: Mapping[str, Mapping[str, Any]] | None = None,
        late: Sequence[str] = (),
        audio: Mapping[str, Any] | None = None,
        tts_bytes_per_s: int | None = None,
        log_level: str = "INFO",
    ) -> None:
        self.work = work
        self.sync = sync
        self.late = tuple(late)
        self.audio = dict(audio or {})
        self.log_level = log_level
        group = group or {}
        self.nodes = {
            name: Node(name, tuple(groups), work / name, dict(group.get(name, {})))
            for name, groups in nodes.items()
        }
        self.broker = Mosquitto(free_port(), work, options=(f"sys_interval {SYS_INTERVAL_S}",))
        self.server_port = free_port()
        self.server = LocalServer(work / "server.toml", work / "server.log", clean_env())
        self.link = (
            None if tts_bytes_per_s is None else PacedLink(self.server_port, tts_bytes_per_s)
        )
        self._short: list[Path] = []  # PulseAudio dirs (unix socket paths must stay short)

    # ---- configs ---------------------------------------------------------------------------
    def _group_section(self, node: Node) -> dict[str, Any]:
        keys: dict[str, Any] = {} if self.sync is None else {"sync": self.sync}
        keys |= node.group
        if not keys or (keys == {"sync": False} and not has_group_config()):
            return {}  # without [group] every node synthesises on its own: sync off
        if not has_group_config():
            raise StackError(
                f"this edgespeak has no [group] section (issue 16 not built): {node.node_id} "
                f"was to get [group] {keys}"
            )
        return {"group": keys}

    def _common(self) -> dict[str, dict[str, Any]]:
        return {
            "mqtt": {"port": self.broker.port, "prefix": PREFIX},
            "tts": {"format": "pcm", "sample_rate": 22050},
            "server": {"port": self.server_port, "voice": "en"},
            "limits": {"rate": UNLIMITED_RATE},
        }

    def _write_configs(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.server.config.write_text(toml("server", self._common()))
        for node in self.nodes.values():
            node.work.mkdir(parents=True, exist_ok=True)
            sections = self._common()
            sections["mqtt"]["groups"] = list(node.groups)
            if self.link is not None:  # the daemons reach the server through the paced link
                sections["server"]["port"] = self.link.port
            sections["cache"] = {"dir": str(node.cache)}
            sections["daemon"] = {"state_dir": str(node.work / "state")}
            if self.audio:
                sections["audio"] = dict(self.audio)
            sections |= self._group_section(node)
            node.config.write_text(toml(node.node_id, sections))

    # ---- processes -------------------------------------------------------------------------
    def start(self) -> None:
        """Broker, server, every node's sink and recording, every daemon but the late ones.
        Returns once each process runs (not once each daemon is online: see
        :meth:`harness.rooms_ears.Ears.wait_online`). Raises StackError."""
        self._write_configs()
        self.broker.start()
        self.server.start()
        if self.link is not None:
            self.link.start()
        for node in self.nodes.values():
            short = Path(tempfile.mkdtemp(prefix="rooms-"))
            self._short.append(short)
            node.pulse = PulseAudio(short)
            node.pulse.start()
            recorder = MonitorRecorder(node.pulse, node.work / "monitor.raw")
            try:
                recorder.start()
            except RuntimeError as exc:
                raise StackError(f"{node.node_id}: {exc}") from exc
            node.recorder = recorder
        for name in self.nodes:
            if name not in self.late:
                self.start_node(name)

    def start_node(self, name: str) -> None:
        """Start (or restart) node ``name``'s daemon on its own sink."""
        node = self.nodes[name]
        assert node.pulse is not None, "Rooms.start first"
        conf = node.work / "asound.conf"
        conf.write_text(f'pcm.!default {{\n type pulse\n server "{node.pulse.server}"\n}}\n')
        env = clean_env(ALSA_CONFIG_PATH=f"/usr/share/alsa/alsa.conf:{conf}")
        command = ["run", "--config", str(node.config), "--log-level", self.log_level]
        node.proc = subprocess.Popen(
            edgespeak_command(*command),
            stdout=subprocess.DEVNULL,
            stderr=node.log.open("ab"),
            env=env,
        )

    def kill_node(self, name: str) -> None:
        """SIGKILL node ``name``'s daemon (a power cut: no orderly goodbye)."""
        proc = self.nodes[name].proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def stop_node(self, name: str) -> None:
        """Stop node ``name``'s daemon in order (SIGTERM)."""
        stop_process(self.nodes[name].proc)

    def server_sessions(self) -> int:
        """TTS sessions the local server has ended so far (its log's INFO lines)."""
        if not self.server.log.exists():
            return 0
        text = self.server.log.read_text(errors="replace")
        return sum(text.count(line) for line in SESSION_LINES)

    def stop_recordings(self) -> dict[str, Recording]:
        """Stop every node's recording; node id → what its sink played since :meth:`start`."""
        for node in self.nodes.values():
            if node.recorder is not None and node.recording is None:
                node.recording = node.recorder.stop()
        return {n.node_id: n.recording for n in self.nodes.values() if n.recording is not None}

    def stop(self) -> None:
        """Stop everything started (recordings first); idempotent. Every step is taken even
        when one fails (no process is left behind); then the first failure is raised."""
        steps: list[Callable[[], None]] = []
        steps += [n.recorder.close for n in self.nodes.values() if n.recorder is not None]
        steps += [partial(self.stop_node, name) for name in self.nodes]
        steps += [self.link.stop] if self.link is not None else []
        steps += [self.server.stop, self.broker.stop]
        steps += [n.pulse.stop for n in self.nodes.values() if n.pulse is not None]
        failures: list[Exception] = []
        for step in steps:
            try:
                step()
            except Exception as exc:  # go on: stop the rest, raise after
                failures.append(exc)
        for short in self._short:
            shutil.rmtree(short, ignore_errors=True)
        self._short.clear()
        if failures:
            raise failures[0]

    def __enter__(self) -> Rooms:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- what a listener heard ------------------------------------------------------------------
@dataclass
class Sent:
    """One announcement published: ``sent`` is ``time.monotonic()`` just before the publish;
    ``nodes`` those expected to play it. :meth:`harness.rooms_ears.Ears.wait_done` fills
    ``events`` (node → its terminal event), ``done_at`` (when the last came, monotonic s),
    ``sessions`` (server sessions ended meanwhile) and ``bytes`` (MQTT topic + payload bytes
    published under the prefix meanwhile, as one subscriber received them)."""

    ann_id: str
    text: str
    topic: str
    sent: float
    nodes: tuple[str, ...]
    sessions_before: int = 0
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    done_at: float | None = None
    sessions: int = 0
    bytes: int = 0

    @property
    def kind(self) -> str:
        """``hit`` when every node played it from its cache, ``miss`` otherwise."""
        sources = {e.get("source") for e in self.events.values()}
        return "hit" if sources == {"cache"} else "miss"

    @property
    def speech_s(self) -> float:
        """Seconds of audio played (the longest ``duration_s`` of the nodes' events)."""
        return max((float(e.get("duration_s") or 0.0) for e in self.events.values()), default=0)


@dataclass
class Heard:
    """What the rooms heard of one announcement: ``starts`` node → the ``time.monotonic()``
    second its first sound came out of that node's sink (None: not heard)."""

    sent: Sent
    starts: dict[str, float | None]

    @property
    def heard(self) -> dict[str, float]:
        return {n: t for n, t in self.starts.items() if t is not None}

    @property
    def spread_ms(self) -> float | None:
        """Latest first sound - earliest, ms, over the nodes that heard it (None: none did)."""
        times = list(self.heard.values())
        return (max(times) - min(times)) * 1000 if times else None

    @property
    def latency_ms(self) -> dict[str, float]:
        """Node → its first sound - the publish, ms."""
        return {n: (t - self.sent.sent) * 1000 for n, t in self.heard.items()}

    def describe(self) -> str:
        lat = ", ".join(f"{n} {v:.1f}" for n, v in sorted(self.latency_ms.items()))
        spread = "-" if self.spread_ms is None else f"{self.spread_ms:.1f}"
        return f"{self.sent.ann_id} ({self.sent.kind}): spread {spread} ms; heard after ms: {lat}"


def measure(
    sents: Sequence[Sent], recordings: Mapping[str, Recording], level: int = LEVEL
) -> list[Heard]:
    """Each announcement's first sound on each of its nodes: the first sample at or above
    ``level`` in magnitude between its publish and the next announcement's (``sents`` in
    publish order)."""
    heard = []
    for i, sent in enumerate(sents):
        end = sents[i + 1].sent if i + 1 < len(sents) else float("inf")
        starts = {
            n: recordings[n].first_above(level, after=sent.sent, before=end) for n in sent.nodes
        }
        heard.append(Heard(sent, starts))
    return heard


def spread_summary(values: Sequence[float]) -> dict[str, float]:
    """n, p50, p95 and max of ``values`` (ms), rounded to 0.01."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    p95 = statistics.quantiles(ordered, n=20, method="inclusive")[18] if len(ordered) > 1 else 0
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 2),
        "p95": round(p95 if len(ordered) > 1 else ordered[0], 2),
        "max": round(ordered[-1], 2),
    }
