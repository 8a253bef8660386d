"""Event-loop lag probe: run ``edgespeak`` with a task in its event loop that measures how late
the loop wakes it, so the benchmark sees every stall of the loop (blocking work on it).

``python -m bench.looplag OUT -- EDGESPEAK-ARGS``: runs ``edgespeak EDGESPEAK-ARGS`` in this
process; every event loop it creates gets a task sleeping ``INTERVAL_S`` (5 ms) again and
again and recording how much later than asked it woke, in ms. On SIGUSR1 the probe appends
one JSON line to OUT — ``{"samples": n, "max_ms", "p99_ms", "p50_ms", "over_20_ms": count,
"over_100_ms": count}`` for the wakes since the previous line — and starts afresh. A stall
shows as one late wake as long as the stall (minus the rest of the interval).

``LOOPLAG_SLOW_MS=N`` in the environment also turns on asyncio's debug mode with
``slow_callback_duration`` N ms: asyncio then logs (WARNING, logger ``asyncio``) every callback
or task step that held the loop longer, naming it — how a stall is traced to its code.

Only the standard library is imported here: the probe adds one task, not a dependency.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

INTERVAL_S = 0.005


class Probe:
    """Lateness of the loop's wakes, in ms, since the last :meth:`dump`."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.late_ms: list[float] = []
        self.cpu_ms: list[float] = []

    async def run(self) -> None:
        while True:
            asked, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(INTERVAL_S)
            self.late_ms.append((time.perf_counter() - asked - INTERVAL_S) * 1000)
            self.cpu_ms.append((time.thread_time() - cpu) * 1000)

    def dump(self) -> None:
        late, self.late_ms = self.late_ms, []
        cpu, self.cpu_ms = self.cpu_ms, []
        if len(late) >= 2:
            q = statistics.quantiles(late, n=100, method="inclusive")
            p50, p99 = q[49], q[98]
        else:
            p50 = p99 = late[0] if late else 0.0
        line = {
            "samples": len(late),
            "max_ms": round(max(late, default=0.0), 2),
            "p99_ms": round(p99, 2),
            "p50_ms": round(p50, 2),
            "over_20_ms": sum(v > 20 for v in late),
            "over_100_ms": sum(v > 100 for v in late),
            "max_cpu_ms": round(max(cpu, default=0.0), 2),
            "cpu_of_max_ms": round(cpu[late.index(max(late))], 2) if late else 0.0,
        }
        with self.out.open("a") as f:
            f.write(json.dumps(line) + "\n")


class ProbedPolicy(asyncio.DefaultEventLoopPolicy):
    """Every new event loop starts the probe's task and dumps on SIGUSR1."""

    def __init__(self, probe: Probe) -> None:
        super().__init__()
        self.probe = probe
        self.tasks: set[asyncio.Task[None]] = set()

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        loop.call_soon(self._start, loop)
        return loop

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.tasks.add(loop.create_task(self.probe.run(), name="loop-lag probe"))
        loop.add_signal_handler(signal.SIGUSR1, self.probe.dump)
        if slow_ms := os.environ.get("LOOPLAG_SLOW_MS"):
            loop.set_debug(True)
            loop.slow_callback_duration = float(slow_ms) / 1000


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    asyncio.set_event_loop_policy(ProbedPolicy(Probe(Path(argv[0]))))
    from edgespeak.cli.main import main as edgespeak

    return edgespeak(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
