"""The node state shown to Home Assistant and the volume kept across restarts."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from edgespeak.base.events import Event
from edgespeak.inlets.homeassistant.state import NodeState
from edgespeak.inlets.mqtt.commands import parse_volume
from edgespeak.speaking.volume import VolumeStore


def shown(state: NodeState) -> dict[str, object]:
    body: dict[str, object] = json.loads(state.to_json())
    return body


def test_speaking_follows_the_playing_announcement_only() -> None:
    state = NodeState(volume=0.654, queue=2, cache_entries=7, provider_reachable=True)
    assert shown(state) == {
        "state": "speaking", "volume": 65, "queue": 2, "cache_entries": 7,
        "provider_reachable": True, "last_ttfa_ms": None, "last_error": None,
    }  # fmt: skip
    state.observe(Event("a", "playing", ttfa_ms=12.5))
    assert shown(state)["state"] == "speaking" and shown(state)["last_ttfa_ms"] == 12.5
    state.observe(Event("junk", "failed", error="malformed JSON"))  # another one's failure
    assert shown(state)["state"] == "speaking" and shown(state)["last_error"] == "malformed JSON"
    state.observe(Event("a", "interrupted", error="stopped"))
    assert shown(state)["state"] == "speaking"  # two are waiting: the next starts at once
    state.queue = 0
    assert shown(state)["state"] == "idle"


def test_a_long_error_is_cut_to_what_a_sensor_holds() -> None:
    state = NodeState()
    state.observe(Event("a", "failed", error="x" * 1000))
    error = shown(state)["last_error"]
    assert isinstance(error, str) and len(error) == 255 and error.endswith("…")


@pytest.mark.parametrize(("payload", "volume"), [(b"65", 0.65), (b" 100 ", 1.0), (b"0.5", 0.005)])
def test_volume_payloads_are_percent(payload: bytes, volume: float) -> None:
    assert parse_volume(payload) == pytest.approx(volume)


@pytest.mark.parametrize(("payload", "message"), [(b"loud", "number"), (b"150", "0-100")])
def test_bad_volume_payloads_say_why(payload: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_volume(payload)


def test_the_volume_survives_a_new_store(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path / "state")
    store.save(0.42)
    store.close()
    assert VolumeStore(tmp_path / "state").load() == pytest.approx(0.42)
    assert VolumeStore(tmp_path / "empty").load() is None
    assert not list((tmp_path / "state").glob(".volume-*"))  # no temp file left behind


def test_an_unusable_state_dir_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the state dir should be\n")  # fails for root too
    store = VolumeStore(blocked)
    store.save(0.3)
    store.close()
    assert "cannot keep the volume" in caplog.text
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "volume").write_text("loud\n")
    assert VolumeStore(tmp_path / "bad").load() is None
    assert "ignoring the stored volume" in caplog.text


def test_the_mute_flag_survives_and_setting_a_volume_unmutes(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path)
    changes: list[tuple[float | None, bool]] = []
    store.watch(lambda: changes.append((store.volume, store.muted)))
    store.save(0.5)
    store.save_muted(True)
    store.flush()
    again = VolumeStore(tmp_path)
    assert (again.load(), again.muted) == (pytest.approx(0.5), True)
    again.save(0.7)
    again.close()
    third = VolumeStore(tmp_path)
    assert (third.load(), third.muted) == (pytest.approx(0.7), False)
    assert changes == [(0.5, False), (0.5, True)]


_OPENS: list[tuple[str, int]] | None = None  # (path, thread id) of each file opened, when on


def _note_open(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _OPENS is not None and isinstance(args[0], str):
        _OPENS.append((args[0], threading.get_ident()))


async def test_a_volume_set_on_the_event_loop_does_not_touch_the_disk_there(
    tmp_path: Path,
) -> None:
    """Bad before: ``volume/set`` (and Home Assistant's volume and mute) wrote and fsynced the
    state files on the event loop: a slow SD card stalled every announcement playing. Python's
    own audit event "open" shows which thread opened them."""
    global _OPENS
    sys.addaudithook(_note_open)  # stays for the session, records only while _OPENS is a list
    store = VolumeStore(tmp_path)
    _OPENS = []
    try:
        store.save(0.25)
        store.save_muted(True)
        await asyncio.to_thread(store.close)
        opened = [thread for path, thread in _OPENS if path.startswith(str(tmp_path))]
    finally:
        _OPENS = None
    assert len(opened) == 2, opened  # the volume's file, then the mute flag's
    assert threading.get_ident() not in opened, "written on the event loop's thread"
    again = VolumeStore(tmp_path)
    assert (again.load(), again.muted) == (pytest.approx(0.25), True)
