"""edgespeak.base.systemd against a real AF_UNIX datagram socket standing in for systemd's."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgespeak.base.systemd import (
    STATUS_MAX_CHARS,
    Notifier,
    watchdog_interval_from_env,
    watchdog_loop,
)

WAIT_S = 5.0  # deadline for anything that should happen within milliseconds


@pytest.fixture(autouse=True)
def _no_systemd_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests may themselves run under systemd: start from a clean slate."""
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket in tmp_path, named by $NOTIFY_SOCKET."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(WAIT_S)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def received(sock: socket.socket) -> str:
    """The next datagram (waits up to WAIT_S), decoded as UTF-8 (strict: must be valid)."""
    return sock.recv(8192).decode("utf-8")


def drain(sock: socket.socket) -> list[str]:
    """Every datagram already queued on ``sock``, without waiting."""
    out: list[str] = []
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(8192).decode("utf-8"))
    except BlockingIOError:
        return out
    finally:
        sock.settimeout(timeout)


def test_messages_arrive_on_the_socket(listener: socket.socket) -> None:
    notifier = Notifier()
    assert notifier.enabled
    notifier.ready("listening on broker.lan:1883")
    assert received(listener) == "READY=1\nSTATUS=listening on broker.lan:1883"
    notifier.status("speaking")
    assert received(listener) == "STATUS=speaking"
    notifier.watchdog()
    assert received(listener) == "WATCHDOG=1"
    notifier.stopping()
    assert received(listener) == "STOPPING=1"
    notifier.close()
    assert drain(listener) == []


def test_status_is_utf8_and_one_line(listener: socket.socket) -> None:
    notifier = Notifier()
    notifier.status("Café → Küche")
    assert received(listener) == "STATUS=Café → Küche"
    # A text quoting an MQTT payload must not smuggle in a second assignment.
    notifier.status("door\nREADY=1\r\nMAINPID=1")
    message = received(listener)
    assert message == "STATUS=door READY=1 MAINPID=1"
    assert "\n" not in message
    notifier.status("x" * 5000)
    long = received(listener)
    assert len(long) == len("STATUS=") + STATUS_MAX_CHARS
    assert long.endswith("…")
    notifier.close()


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"edgespeak-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(WAIT_S)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        notifier = Notifier()
        notifier.ready("up")
        assert received(sock) == "READY=1\nSTATUS=up"
        notifier.close()
    finally:
        sock.close()


def test_no_socket_is_a_silent_no_op(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edgespeak.base.systemd")
    notifier = Notifier()
    assert not notifier.enabled
    notifier.ready("up")
    notifier.status("x")
    notifier.watchdog()
    notifier.stopping()
    notifier.close()
    assert caplog.records == []


# sdnotify drops the socket of a failed connect() without closing it (the GC closes it).
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_send_failures_never_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edgespeak.base.systemd")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    notifier = Notifier()
    assert notifier.enabled
    notifier.ready("up")  # connect fails: ENOENT
    assert any("cannot connect" in r.getMessage() for r in caplog.records)
    assert all(r.levelno == logging.DEBUG for r in caplog.records)

    # Connected, then the listener goes away: send fails (ECONNREFUSED).
    path = tmp_path / "gone.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    notifier = Notifier()
    notifier.status("connected")
    assert sock.recv(100, socket.MSG_DONTWAIT) == b"STATUS=connected"
    sock.close()
    caplog.clear()
    notifier.watchdog()
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    message = caplog.records[0].getMessage()
    assert "WATCHDOG to" in message
    assert "not delivered" in message
    notifier.close()


def test_reconnects_after_a_failed_send(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "restarted.sock"
    first = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    first.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    notifier = Notifier()
    first.close()
    path.unlink()
    notifier.watchdog()  # lost: nobody listens
    second = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    second.bind(str(path))
    second.settimeout(WAIT_S)
    try:
        notifier.watchdog()
        assert received(second) == "WATCHDOG=1"
    finally:
        notifier.close()
        second.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "{pid}"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "{other}"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "self"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "30s"}, None),
        ({"WATCHDOG_USEC": "100000"}, 0.1),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    pid = os.getpid()
    filled = {k: v.format(pid=pid, other=pid + 1) for k, v in env.items()}
    assert watchdog_interval_from_env(filled, pid) == expected


def test_watchdog_interval_of_a_notifier(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier()
    assert notifier.watchdog_interval_s == 20.0
    notifier.close()
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    notifier = Notifier()
    assert notifier.watchdog_interval_s is None
    notifier.close()
    # Pings could not be delivered without a socket: not enabled either.
    monkeypatch.delenv("NOTIFY_SOCKET")
    monkeypatch.delenv("WATCHDOG_PID")
    assert Notifier().watchdog_interval_s is None


async def test_watchdog_loop_returns_when_disabled(listener: socket.socket) -> None:
    calls: list[int] = []

    def healthy() -> bool:
        calls.append(1)
        return True

    notifier = Notifier()
    await asyncio.wait_for(watchdog_loop(notifier, healthy), WAIT_S)
    assert calls == []
    assert drain(listener) == []
    notifier.close()


async def test_watchdog_loop_pings_only_while_healthy(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Each check that returns True is followed by exactly one ping, a False one by none."""
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # 0.1 s: checks every 50 ms
    caplog.set_level(logging.INFO, logger="edgespeak.base.systemd")
    state = {"healthy": True}
    answers: list[bool] = []
    reached = asyncio.Event()
    target = {"n": 3}

    def healthy() -> bool:
        answers.append(state["healthy"])
        if len(answers) >= target["n"]:
            reached.set()
        return state["healthy"]

    async def checks(n: int) -> None:
        """Wait until healthy() has been asked ``n`` more times."""
        reached.clear()
        target["n"] = len(answers) + n
        await asyncio.wait_for(reached.wait(), WAIT_S)

    notifier = Notifier()
    task = asyncio.create_task(watchdog_loop(notifier, healthy))
    try:
        await checks(3)
        assert drain(listener) == ["WATCHDOG=1"] * answers.count(True)
        assert len(answers) >= 3

        state["healthy"] = False
        before = len(answers)
        await checks(4)
        assert drain(listener) == []  # not one ping while unhealthy
        assert answers[before:] == [False] * (len(answers) - before)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1  # once per spell, not once per check
        assert "pings stopped" in warnings[0].getMessage()

        state["healthy"] = True
        await checks(2)
        assert len(drain(listener)) == answers[-2:].count(True) == 2
        assert any("pings resumed" in r.getMessage() for r in caplog.records)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        notifier.close()


async def test_watchdog_loop_counts_a_raising_check_as_unhealthy(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    calls: list[int] = []
    third = asyncio.Event()

    def broken() -> bool:
        calls.append(1)
        if len(calls) >= 3:
            third.set()
        raise RuntimeError("health check bug")

    notifier = Notifier()
    task = asyncio.create_task(watchdog_loop(notifier, broken))
    try:
        await asyncio.wait_for(third.wait(), WAIT_S)
        assert drain(listener) == []
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert warnings[0].exc_info is not None
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        notifier.close()
