"""The writer thread takes a prime while its caller waits: the caller (the event loop, parsing
an announcement) would otherwise keep the GIL the woken writer needs, and the prime's drop and
prepare would start 0.35-1.5 ms later (issue 17). A real PcmDevice (never opened here, so the
prime itself does nothing) and the real writer thread."""

from __future__ import annotations

import threading
import time

from edgespeak.audio.device import PcmDevice
from edgespeak.audio.playback import Player
from edgespeak.audio.writer import Writer


class NotedPlayer(Player):
    """A real Player that notes the thread of each prime it is asked for."""

    def __init__(self) -> None:
        super().__init__(PcmDevice("default", 20, 4), keep_open_s=0.0)
        self.primed_on: list[int] = []

    def prime(self) -> None:
        self.primed_on.append(threading.get_ident())
        super().prime()


def test_prime_returns_once_the_writer_thread_has_taken_it() -> None:
    player = NotedPlayer()
    writer = Writer(player, queue_chunks=4)
    try:
        taken = [writer.prime(wait_s=5.0) for _ in range(50)]
    finally:
        writer.close()  # carries out what is queued, then the thread ends
    assert taken == [True] * 50, "each prime was taken by the writer before prime() returned"
    assert len(player.primed_on) == 50
    (thread,) = set(player.primed_on)
    assert thread != threading.get_ident(), "primed on the writer's thread, not the caller's"


def test_prime_waits_no_longer_than_asked_when_the_writer_is_gone() -> None:
    writer = Writer(NotedPlayer(), queue_chunks=4)
    writer.close()
    started = time.monotonic()
    assert not writer.prime(wait_s=0.05)
    assert 0.05 <= time.monotonic() - started < 1.0
