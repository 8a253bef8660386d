"""Soak: 1,000 short announcements from the phrase cache, QoS 1, as fast as the broker takes
them. All are spoken (events and byte-exact capture) and the daemon's resident memory grows by
less than a generous bound: a leak per announcement (a kept event, PCM, task or sqlite
statement) would show. The RSS figures are printed (``pytest -s``).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Stack, Watcher, daemon_process, logged, watching

PHRASES = ("Yes.", "Done.", "Door.")
WARM_UP = 50  # announcements before the first RSS reading: allocator and caches settle
COUNT = 1000
MAX_GROWTH_KIB = 30 * 1024
SOAK_ENV = {  # let the burst in and keep it until its turn
    "EDGESPEAK_LIMITS__RATE": "100000/second",
    "EDGESPEAK_DAEMON__QUEUE_MAX": "1000",
    "EDGESPEAK_DAEMON__TTL_S": "600",
}


def rss_kib(pid: int) -> int:
    """The process's resident set size in KiB (``VmRSS`` in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


async def burst(w: Watcher, first: int, count: int) -> None:
    """Announce ``count`` phrases (ids ``soak-first`` on) and wait until the last finished;
    the daemon speaks them in order, so all of them have."""
    for i in range(first, first + count):
        await w.announce(json.dumps({"text": PHRASES[i % len(PHRASES)], "id": f"soak-{i}"}))
    await w.wait("finished", "failed", ann_id=f"soak-{first + count - 1}", timeout_s=120)


async def test_a_thousand_cached_announcements_all_play_and_memory_stays_flat(
    stack: Stack,
) -> None:
    audio = {text: await stack.sent(text) for text in PHRASES}
    config = stack.config(phrases=PHRASES)
    with daemon_process(config, stack.capture, stack.workdir, env=SOAK_ENV) as daemon:
        async with watching(stack.broker.port) as w:
            await logged(stack.daemon_log, f"{len(PHRASES)} of {len(PHRASES)} pinned phrases")
            await burst(w, 0, WARM_UP)
            before = rss_kib(daemon.pid)
            await burst(w, WARM_UP, COUNT)
            after = rss_kib(daemon.pid)
            assert daemon.poll() is None
    print(
        f"\nsoak: daemon RSS {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after "
        f"{COUNT} cached announcements ({(after - before) / 1024:+.1f} MiB)"
    )
    finished = [e for e in w.events if e["state"] == "finished"]
    assert len(finished) == WARM_UP + COUNT, [e for e in w.events if e["state"] == "failed"]
    assert {e["source"] for e in finished} == {"cache"}
    assert [e["id"] for e in finished] == [f"soak-{i}" for i in range(WARM_UP + COUNT)]
    expected = b"".join(audio[PHRASES[i % len(PHRASES)]] for i in range(WARM_UP + COUNT))
    assert stack.capture.read() == expected
    assert after - before < MAX_GROWTH_KIB, f"RSS grew {after - before} KiB"
