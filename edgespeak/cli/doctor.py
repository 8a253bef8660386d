"""``edgespeak doctor``: check each part the daemon needs, print a table with a fix per failure.

Checks, in order: the config (and its secrets can be read), the ALSA output (opened with the
daemon's settings, 100 ms of silence played through the daemon's own writer), the broker
(connect with the daemon's settings and subscribe to the announce topics), with ``[group]
sync`` the running daemon's group clock (:mod:`edgespeak.cli.doctor_clock`), the TTS provider
(handshake and a one-word synthesis, decoded), the local engines (espeak-ng and Piper: their
voices and real-time factor measured here, :mod:`edgespeak.cli.doctor_engines`), the offline
fallback they make, and the phrase cache (directory writable, entries and size). Exit code 0
when nothing failed, 1 otherwise (warnings do not count). Nothing printed carries a secret:
every detail comes from messages that are built without them (see
:mod:`edgespeak.base.errors`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiomqtt

from edgespeak.audio.alsa import AlsaSink
from edgespeak.audio.formats import make_decoder
from edgespeak.base.errors import AudioDeviceError, EdgespeakError, TtsError, TtsRejected
from edgespeak.cli.cache import size
from edgespeak.cli.doctor_clock import check_clock
from edgespeak.cli.doctor_engines import check_engines, fallback_row
from edgespeak.cli.doctor_rows import Check
from edgespeak.config import Settings, load_config
from edgespeak.inlets.mqtt.connect import (
    ProtocolChoice,
    connected,
    describe_failure,
    protocol_name,
)
from edgespeak.inlets.mqtt.topics import Topics
from edgespeak.sources.cache import PhraseCache

SILENCE_S = 0.1  # seconds of silence the audio check plays
WORD = "Test."  # the one-word synthesis
BROKER_TIMEOUT_S = 10.0


def doctor(config_path: Path | None) -> int:
    """Run every check and print the table; returns the exit code (1 when a check failed)."""
    checks = asyncio.run(run_checks(config_path))
    print(render(checks), flush=True)
    return 1 if any(c.result == "FAIL" for c in checks) else 0


async def run_checks(config_path: Path | None) -> list[Check]:
    """Every check's row; stops after the config row when the config cannot be loaded."""
    try:
        settings = load_config(config_path)
        settings.tts_token  # noqa: B018 - reads the key files and credentials, may raise
        settings.mqtt.resolved_password()
    except EdgespeakError as exc:
        fix = "correct the key named above (every key is described in config.example.toml)"
        return [Check("config", "FAIL", str(exc), fix)]
    where = str(config_path) if config_path else "defaults and environment"
    checks = [Check("config", "ok", f"loaded ({where})")]
    steps: list[Callable[[Settings], Awaitable[Check]]] = [check_audio, check_broker, check_tts]
    for step in steps:
        checks.append(await step(settings))
        if checks[-1].part == "broker" and checks[-1].result == "ok" and settings.group.sync:
            checks.append(await check_clock(settings))  # the running daemon's group clock
    engines, measured = await check_engines(settings)  # espeak-ng, Piper: voices and RTF
    checks += [*engines, fallback_row(settings, measured), await check_cache(settings)]
    return checks


async def check_audio(s: Settings) -> Check:
    """Open ``[audio] device`` as the daemon does and play 100 ms of silence."""
    a = s.audio
    rate_hz = s.tts.rate_hz
    try:
        sink = AlsaSink(
            a.device, period_ms=a.period_ms, buffer_ms=a.buffer_ms, fade_ms=0, keep_open_s=0
        )
    except (AudioDeviceError, ValueError) as exc:
        return Check("audio", "FAIL", str(exc), _AUDIO_FIX)
    try:
        utt = await sink.begin(rate_hz, lead_in_ms=0)
        await sink.write(utt, bytes(round(rate_hz * SILENCE_S) * 2))
        playback = await asyncio.wait_for(sink.end(utt), timeout=5.0)
    except AudioDeviceError as exc:
        return Check("audio", "FAIL", str(exc), _AUDIO_FIX)
    except TimeoutError:
        return Check("audio", "FAIL", f"ALSA device {a.device!r} did not play in 5 s", _AUDIO_FIX)
    finally:
        sink.close()
    ms = playback.duration_s * 1000
    return Check("audio", "ok", f"{a.device!r}: played {ms:.0f} ms of silence at {rate_hz} Hz")


_AUDIO_FIX = (
    'set [audio] device to one listed by `aplay -L` (e.g. "default", "plughw:CARD=..."); '
    "the service user must be in the audio group"
)


async def check_broker(s: Settings) -> Check:
    """Connect to the broker with the daemon's settings and subscribe to the announce topics."""
    where = f"{s.mqtt.host}:{s.mqtt.port}"
    choice = ProtocolChoice(s)
    topics = Topics.from_settings(s)
    try:
        async with asyncio.timeout(BROKER_TIMEOUT_S):
            identifier = f"{s.node_id}-doctor-{uuid.uuid4().hex[:6]}"
            async with connected(s, choice, identifier=identifier) as client:
                for topic in topics.announce:
                    await client.subscribe(topic, qos=1)
    except TimeoutError:
        fix = "check [mqtt] host/port and the network; is the broker running?"
        return Check("broker", "FAIL", f"broker {where}: no answer in {BROKER_TIMEOUT_S:g} s", fix)
    except aiomqtt.MqttError as exc:
        detail = describe_failure(exc, where)
        return Check("broker", "FAIL", detail, _broker_fix(detail, s))
    except EdgespeakError as exc:
        return Check("broker", "FAIL", str(exc), "fix the [mqtt] key named above")
    version = f"MQTT {protocol_name(choice.version)}"
    return Check("broker", "ok", f"{where} with {version}: subscribed to {len(topics.announce)}")


def _broker_fix(detail: str, s: Settings) -> str:
    if "refused the login" in detail:
        return "set [mqtt] username and password (or password_file / the mqtt_password credential)"
    if "certificate" in detail or "TLS" in detail:
        return "check [mqtt] tls, ca_file and that host matches the broker's certificate"
    if s.mqtt.host in ("127.0.0.1", "localhost"):
        return "start the broker (`systemctl start mosquitto`) or set [mqtt] host"
    return "check [mqtt] host and port, the network, and that the broker is running"


async def check_tts(s: Settings) -> Check:
    """Handshake with the provider and synthesise one word; the audio must decode."""
    from edgespeak.providers.factory import make_client  # the clients are heavier: load late
    from edgespeak.providers.fish_request import provider_request

    limit_s = s.tts.connect_timeout_s + s.tts.first_audio_timeout_ms / 1000 + 10
    started = time.monotonic()
    first_at: float | None = None
    decoder = make_decoder(s.tts.format, s.tts.rate_hz)
    frames = 0
    try:
        async with asyncio.timeout(limit_s), make_client(s) as tts:
            async for chunk in tts.stream(WORD, provider_request(s, None)):
                first_at = first_at or time.monotonic()
                frames += len(decoder.feed(chunk)) // 2
            frames += len(decoder.finish()) // 2
    except TimeoutError:
        fix = "check [tts] url and that the server is running (`edgespeak serve`)"
        return Check("tts", "FAIL", f"{s.tts_url}: no audio in {limit_s:g} s", fix)
    except TtsRejected as exc:
        return Check("tts", "FAIL", str(exc), _REJECTED_FIX.get(exc.status or 0, _TTS_FIX))
    except (TtsError, EdgespeakError) as exc:
        return Check("tts", "FAIL", str(exc), _TTS_FIX)
    if frames == 0:
        return Check("tts", "FAIL", f"{s.tts_url}: finished without audio", _TTS_FIX)
    ttfa_ms = ((first_at or started) - started) * 1000
    seconds = frames / (decoder.rate_hz or s.tts.rate_hz)
    detail = (
        f"{s.tts_url}: {WORD!r} → {seconds:.2f} s of {s.tts.format}, first audio {ttfa_ms:.0f} ms"
    )
    return Check("tts", "ok", detail)


_TTS_FIX = "check [tts] url (ws:// or wss://…/v1/tts/live) and that the server is running"
_REJECTED_FIX = {
    401: "set [tts] api_key (or api_key_file / the tts_api_key credential) to a valid key",
    402: "top up the provider account's credit, or use the local server (unset [tts] url)",
    429: "too many connections or requests on this account: wait, or lower the load",
}


async def check_cache(s: Settings) -> Check:
    """The phrase cache directory: writable, and how full."""
    c = s.cache
    if not c.enabled:
        return Check("cache", "ok", "disabled ([cache] enabled = false)")
    fix = f"make {c.dir} writable by the service user, or set [cache] dir"
    try:
        c.dir.mkdir(parents=True, exist_ok=True)
        probe = c.dir / f".doctor-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        return Check("cache", "FAIL", f"{c.dir} is not writable: {exc.strerror or exc}", fix)
    cache = PhraseCache(c.dir, max_bytes=c.max_bytes)
    try:
        if not cache.usable:
            return Check("cache", "FAIL", f"cannot open the cache index in {c.dir}", fix)
        used, bound = cache.total_bytes(), c.max_bytes
        detail = f"{c.dir}: {cache.count()} entries, {size(used)} of {size(bound)}"
    finally:
        cache.close()
    if bound and used > bound * 0.9:
        return Check("cache", "warn", detail + " (nearly full)", "raise [cache] max_mb")
    return Check("cache", "ok", detail)


def render(checks: list[Check]) -> str:
    """The report: one row per check (part, result, detail), a fix line under each failure
    or warning, then a summary line."""
    width = max(len(c.part) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.part:<{width}}  {c.result:<4}  {c.detail}")
        if c.fix and c.result != "ok":
            lines.append(f"{'':<{width}}  {'':<4}  fix: {c.fix}")
    failed = [c.part for c in checks if c.result == "FAIL"]
    lines.append(f"{len(failed)} failed: {', '.join(failed)}" if failed else "all checks passed")
    return "\n".join(lines)
