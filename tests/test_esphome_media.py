"""The media player through the real daemon: URLs served by a real aiohttp server, played
through the scheduler and speaker to the ALSA file capture, with the MQTT events and the
states Home Assistant would see; announce preemption, stop, volume and mute (persisted),
bad URLs, and a client leaving mid-play."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from aioesphomeapi import MediaPlayerCommand, MediaPlayerState

from tests.conftest import Stack, Watcher
from tests.esphome_peer import (
    RATE,
    MediaServer,
    Node,
    Peer,
    encoded,
    esphome_node,
    media_server,
    peer,
    tone,
)
from tests.test_media_decode import dominant_hz

IDLE, PLAYING = MediaPlayerState.IDLE, MediaPlayerState.PLAYING
TOKEN = "authSig=SECRET-TOKEN-123"  # Home Assistant signs its URLs in the query
HELD_PCM = (tone(0.5, RATE)[:, 0] * 32767).astype("<i2").tobytes() * 2


async def play(node: Node, p: Peer, url: str, *, announce: bool = False) -> dict[str, Any]:
    """Play ``url``; its ``finished`` or ``failed`` event."""
    after = len(node.watcher.events)
    p.play(url, announce=announce)
    return await node.watcher.wait("finished", "failed", after=after)


def pcm_of(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float64)


def rms(data: bytes) -> float:
    return float(np.sqrt(np.mean(pcm_of(data) ** 2))) if data else 0.0


FILES = {  # name → (format, subtype, rate, channels)
    "proxy.wav": ("WAV", "PCM_16", RATE, 1),  # what Home Assistant's ffmpeg proxy sends
    "stereo.wav": ("WAV", "PCM_24", 44100, 2),
    "tone.flac": ("FLAC", "PCM_16", 48000, 2),
    "tone.mp3": ("MP3", "MPEG_LAYER_III", 44100, 2),
    "tone.ogg": ("OGG", "VORBIS", 44100, 1),
}


async def test_each_format_plays_at_the_speech_rate(stack: Stack) -> None:
    async with media_server() as media, esphome_node(stack) as node, peer(node) as p:
        for name, (fmt, subtype, rate, channels) in FILES.items():
            media.files[name] = (encoded(fmt, subtype, 1.0, rate, channels), "audio/x-test")
        captured: dict[str, bytes] = {}
        for name in FILES:
            before = len(stack.capture.read())
            done = await play(node, p, media.url(name, TOKEN))
            assert done["state"] == "finished", done
            assert (done["source"], done["host"]) == ("url", media.base.split("//")[1])
            captured[name] = stack.capture.read()[before:]
        await p.wait_state(lambda s: s.state == IDLE, after=1)
    expected = (tone(1.0, RATE)[:, 0] * 32768).astype(np.float64)
    assert np.max(np.abs(pcm_of(captured["proxy.wav"]) - expected)) <= 1  # untouched
    for name, pcm in captured.items():
        frames = len(pcm) // 2
        assert RATE * 0.98 <= frames <= RATE * 1.1, name  # 1 s at the speech rate
        assert abs(dominant_hz(pcm, RATE) - 440) < 5, name
        assert 0.3 * 32768 < rms(pcm) < 0.4 * 32768, name
    assert p.played() == [IDLE] + [PLAYING, IDLE] * len(FILES)
    everything = json.dumps(node.watcher.events) + stack.daemon_log.read_text()
    assert "SECRET-TOKEN" not in everything and "proxy.wav" not in everything


async def test_announce_interrupts_what_plays_then_what_waited_plays(stack: Stack) -> None:
    async with media_server() as media, esphome_node(stack) as node, peer(node) as p:
        media.files["waiting.wav"] = (encoded("WAV", "PCM_16", 0.3, RATE, 1), "audio/wav")
        media.files["bell.flac"] = (encoded("FLAC", "PCM_16", 0.3, RATE, 1), "audio/flac")
        w = node.watcher
        p.play(media.url("held.wav"))
        held = await w.wait("playing")
        await p.wait_state(lambda s: s.state == PLAYING)
        p.play(media.url("waiting.wav"))  # normal: waits behind the held one
        waiting = await w.wait("received", after=w.events.index(held) + 1)
        p.play(media.url("bell.flac"), announce=True)  # high: interrupts
        stopped = await w.wait("interrupted", ann_id=held["id"])
        last = await w.wait("finished", ann_id=waiting["id"])
        await p.wait_state(lambda s: s.state == IDLE, after=len(p.states) - 1)
    playing = [e["id"] for e in w.events if e["state"] == "playing"]
    bell = playing[1]
    assert playing == [held["id"], bell, waiting["id"]]
    assert "interrupted by" in stopped["error"] and "(high priority)" in stopped["error"]
    assert w.states(bell) == ["received", "playing", "finished"] and last["source"] == "url"
    assert p.played() == [IDLE, PLAYING, IDLE, PLAYING, IDLE, PLAYING, IDLE]


async def test_stop_mid_play_goes_idle_and_clears_the_queue(stack: Stack) -> None:
    async with media_server() as media, esphome_node(stack) as node, peer(node) as p:
        media.files["next.wav"] = (encoded("WAV", "PCM_16", 0.3, RATE, 1), "audio/wav")
        w = node.watcher
        p.play(media.url("held.wav"))
        held = await w.wait("playing")
        p.play(media.url("next.wav"))
        queued = await w.wait("received", after=w.events.index(held) + 1)
        p.client.media_player_command(p.info.key, command=MediaPlayerCommand.STOP)
        await w.wait("interrupted", ann_id=held["id"])
        dropped = await w.wait("interrupted", ann_id=queued["id"])
        await p.wait_state(lambda s: s.state == IDLE, after=1)
    assert dropped["error"] == "stopped before it played"
    assert "playing" not in w.states(queued["id"])
    assert len(stack.capture.read()) < len(HELD_PCM)  # the rest of the held one never played


async def test_a_client_leaving_mid_play_changes_nothing_audible(stack: Stack) -> None:
    async with media_server() as media, esphome_node(stack) as node:
        async with peer(node) as p:
            p.play(media.url("held.wav"))
            held = await node.watcher.wait("playing")
        media.release.set()  # the client has gone; the rest of the media comes
        done = await node.watcher.wait("finished", "failed", ann_id=held["id"])
    assert done["state"] == "finished"
    assert stack.capture.read() == HELD_PCM


async def test_volume_and_mute_round_trip_and_survive_a_restart(stack: Stack) -> None:
    async with media_server() as media:
        media.files["tone.wav"] = (encoded("WAV", "PCM_16", 0.5, RATE, 1), "audio/wav")
        full = rms(encoded("WAV", "PCM_16", 0.5, RATE, 1)[44:])
        async with esphome_node(stack) as node, peer(node) as p:
            p.client.media_player_command(p.info.key, volume=0.25)
            await p.wait_state(lambda s: s.volume == pytest.approx(0.25))
            quiet = await captured(stack, node, p, media)
            p.client.media_player_command(p.info.key, command=MediaPlayerCommand.MUTE)
            await p.wait_state(lambda s: s.muted)
            silent = await captured(stack, node, p, media)
        async with esphome_node(stack) as node, peer(node) as p:  # a new daemon
            kept = p.states[0]
            still_silent = await captured(stack, node, p, media)
            await set_volume_over_mqtt(node.watcher, 60)  # another inlet: unmutes too
            back = await p.wait_state(lambda s: not s.muted)
            loud = await captured(stack, node, p, media)
    assert rms(quiet) == pytest.approx(0.25 * full, rel=0.02)
    assert rms(silent) == 0 and rms(still_silent) == 0  # muted is what is audible
    assert (kept.volume, kept.muted) == (pytest.approx(0.25), True)
    assert back.volume == pytest.approx(0.6)
    assert rms(loud) == pytest.approx(0.6 * full, rel=0.02)


async def captured(stack: Stack, node: Node, p: Peer, media: MediaServer) -> bytes:
    """What playing ``tone.wav`` put in the capture."""
    before = len(stack.capture.read())
    assert (await play(node, p, media.url("tone.wav")))["state"] == "finished"
    return stack.capture.read()[before:]


async def set_volume_over_mqtt(w: Watcher, percent: int) -> None:
    await w.client.publish("edgespeak/testnode/volume/set", str(percent), qos=1)


BAD = [  # (path or URL, the failure's reason)
    ("missing.wav", "HTTP 404 Not Found from 127.0.0.1:"),
    ("page.html", "not audio: the server sent an HTML page (Content-Type text/html)"),
    ("cut.flac", "truncated FLAC: "),
    ("short.wav", "was cut short"),
    ("hang", "no answer from 127.0.0.1:"),
    ("long.wav", "too long: more than 1.5 s of audio"),
    ("http://127.0.0.1:9/x.wav", "cannot connect to 127.0.0.1:9: connection refused"),
    ("ftp://127.0.0.1/x.wav", "unsupported URL scheme 'ftp'"),
]


async def test_bad_urls_fail_with_their_reason_and_nothing_else_stops(stack: Stack) -> None:
    async with (
        media_server() as media,
        esphome_node(stack, fetch_timeout_s=1.0, max_seconds=1.5) as node,
        peer(node) as p,
    ):
        flac = encoded("FLAC", "PCM_16", 1.0, RATE, 1)
        media.files["cut.flac"] = (flac[: len(flac) // 2], "audio/flac")
        media.files["page.html"] = (b"<!DOCTYPE html><html><body>Log in</body></html>", "text/html")
        media.files["long.wav"] = (encoded("WAV", "PCM_16", 2.0, RATE, 1), "audio/wav")
        media.files["ok.wav"] = (encoded("WAV", "PCM_16", 0.3, RATE, 1), "audio/wav")
        failures = {}
        for target, _ in BAD:
            url = target if "://" in target else media.url(target, TOKEN)
            failures[target] = await play(node, p, url)
            await p.wait_state(lambda s: s.state == IDLE, after=len(p.states) - 1)
        w = node.watcher
        before = len(w.events)
        p.play(media.url("held.wav"))  # a bad URL while one plays: that one goes on
        held = await w.wait("playing", after=before)
        p.play("ftp://127.0.0.1/x.wav", announce=True)
        await w.wait("failed", after=w.events.index(held) + 1)
        media.release.set()
        done = await w.wait("finished", "interrupted", "failed", ann_id=held["id"])
        assert done["state"] == "finished", done
        assert (await play(node, p, media.url("ok.wav")))["state"] == "finished"
    for target, reason in BAD:
        event = failures[target]
        assert event["state"] == "failed" and reason in event["error"], (target, event)
        assert event["source"] == "url" and event["host"].startswith("127.0.0.1")
    assert "SECRET-TOKEN" not in json.dumps(w.events) + stack.daemon_log.read_text()


async def test_an_mqtt_announcement_shows_as_playing_too(stack: Stack) -> None:
    """What is audible, whichever inlet brought it: the media player says playing."""
    async with esphome_node(stack) as node, peer(node) as p:
        done = await node.watcher.say("Dinner is ready.", "dinner")
        await p.wait_state(lambda s: s.state == IDLE, after=1)
    assert done["state"] == "finished" and "host" not in done
    assert p.played() == [IDLE, PLAYING, IDLE]
