"""Fault injection on the phrase cache's file system: read-only, and full.

The tests run as root, and root writes through ``chmod``, so permissions cannot make a
directory read-only or a disk full. The daemon runs in a private mount namespace instead
(``unshare --mount``, util-linux): its cache directory is a read-only bind mount, or a small
tmpfs that the test fills up from inside that namespace (``nsenter``). Both are what the
kernel does to a real card: EROFS and ENOSPC from the same system calls, nothing simulated.
The rest of the machine does not see these mounts, and they vanish with the daemon.
"""

from __future__ import annotations

import asyncio
import shlex
import subprocess

import pytest

from tests.conftest import Stack, daemon_process, watching

DOOR = "Someone is at the front door."
WASHER = "The washing machine has finished. Please empty it."
TMPFS_SIZE = "256k"  # room for the index and one or two phrases


@pytest.fixture(scope="module", autouse=True)
def mount_namespaces() -> None:
    """Fail (not skip) with the reason when private mount namespaces are not available."""
    try:
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "true"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except FileNotFoundError:
        pytest.fail("unshare is not installed (apt-get install util-linux)")
    if done.returncode != 0:
        pytest.fail(f"these tests need root (CAP_SYS_ADMIN) for unshare --mount: {done.stderr}")


def namespaced(setup: str) -> tuple[str, ...]:
    """A ``daemon_process`` wrapper: run ``setup`` (shell) in a private mount namespace,
    then exec the daemon there (same PID, so ``nsenter --target PID`` reaches it)."""
    return ("unshare", "--mount", "--propagation", "private", "sh", "-c", f'{setup} && exec "$@"',
            "sh")  # fmt: skip


def in_namespace(pid: int, command: str) -> subprocess.CompletedProcess[str]:
    """Run the shell ``command`` in the mount namespace of process ``pid``."""
    return subprocess.run(
        ["nsenter", "--target", str(pid), "--mount", "sh", "-c", command],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


async def test_read_only_cache_directory_warns_and_every_announcement_still_plays(
    stack: Stack,
) -> None:
    cache = stack.cache_dir
    cache.mkdir()
    q = shlex.quote(str(cache))
    wrap = namespaced(f"mount --bind {q} {q} && mount -o remount,bind,ro {q}")
    config = stack.config(phrases=(DOOR,))  # the warmer has nowhere to store it either
    with daemon_process(config, stack.capture, stack.workdir, wrap=wrap) as daemon:
        async with watching(stack.broker.port) as w:
            events = [await w.say(DOOR, "door-1"), await w.say(DOOR, "door-2")]
            assert daemon.poll() is None and w.online.is_set()
    for event in events:
        assert (event["state"], event["source"]) == ("finished", "stream"), event
    assert stack.capture.read() == await stack.sent(DOOR) * 2
    log = stack.daemon_log.read_text()
    assert f"phrase cache disabled: cannot open {cache}: " in log, log
    assert "(read-only file system)" in log
    assert f"could not pre-warm {DOOR!r}: synthesised, but the phrase cache is disabled" in log, log
    assert "Traceback" not in log
    assert list(cache.iterdir()) == []  # the namespace's mount was read-only, truly


async def test_full_disk_under_the_cache_warns_and_every_announcement_still_plays(
    stack: Stack,
) -> None:
    cache = stack.cache_dir
    cache.mkdir()
    q = shlex.quote(str(cache))
    wrap = namespaced(f"mount -t tmpfs -o size={TMPFS_SIZE} tmpfs {q}")
    with daemon_process(stack.config(), stack.capture, stack.workdir, wrap=wrap) as daemon:
        async with watching(stack.broker.port) as w:
            first = await w.say(DOOR, "door-1")  # room left: cached
            filled = await asyncio.to_thread(
                in_namespace, daemon.pid, f"cat /dev/zero > {q}/filler; df -k {q}"
            )
            assert "No space left on device" in filled.stderr, filled
            washer = [await w.say(WASHER, "washer-1"), await w.say(WASHER, "washer-2")]
            door = await w.say(DOOR, "door-2")
            assert daemon.poll() is None and w.online.is_set()
    assert (first["state"], first["source"]) == ("finished", "stream"), first
    for event in washer:  # never stored: each one streamed again
        assert (event["state"], event["source"]) == ("finished", "stream"), event
    assert (door["state"], door["source"]) == ("finished", "cache"), door
    door_pcm, washer_pcm = await stack.sent(DOOR), await stack.sent(WASHER)
    assert stack.capture.read() == door_pcm + washer_pcm * 2 + door_pcm
    log = stack.daemon_log.read_text()
    assert log.count("No space left on device") >= 2, log  # each washer's write, warned
    assert "WARNING edgespeak.sources.synthesis: phrase cache" in log, log
    assert "Traceback" not in log
    assert list(cache.iterdir()) == []  # all of it went to the tmpfs, gone with the daemon
