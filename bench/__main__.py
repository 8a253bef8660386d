"""``python -m bench all|NAME [--quick] [--out PATH] [NAME's options]``: run benchmarks, print
one table, write the results as JSON. ``python -m bench table [--markdown]`` prints the stored
results again (the Markdown form is docs/performance.md's table).

``all`` runs every benchmark of :data:`BENCHES` in order, each with its defaults (``--quick``:
small counts and short windows, a smoke run of a minute or two). Results go to
``bench/results.json`` (``bench/results-quick.json`` with ``--quick``); a run of some benchmarks
replaces their entries and keeps the others', each entry stamped with its time, the machine and
the load average around it. A benchmark that fails is reported, recorded with its error, and the
others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import (
    cache_hit,
    capacity,
    footprint,
    heard,
    latency,
    piper,
    playback,
    rooms,
    stream,
)
from bench.common import Result, Row, load_average, machine

BENCHES: dict[str, ModuleType] = {
    m.NAME: m for m in (cache_hit, stream, heard, rooms, footprint, capacity, piper, playback)
}
EXTRAS: dict[str, ModuleType] = {latency.NAME: latency}  # not in ``all``
HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results.json"
QUICK_OUT = HERE / "results-quick.json"


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:.0f}" if abs(value) >= 100 else str(value)
    if abs(value) < 1:
        return f"{value:.3f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def row_text(bench: str, row: Row) -> str:
    """One table line: a distribution (n, p50, p90, p99), a ratio (p50, p99) or a value."""
    unit = row.get("unit", "")
    cells = [_number(row[k]) if k in row else "" for k in ("n", "p50", "p90", "p99")]
    if "value" in row:
        cells = ["", _number(row["value"]), "", ""]
    n, p50, p90, p99 = cells
    return f"{bench:<10} {row['measure']:<60} {n:>5} {p50:>8} {p90:>8} {p99:>8}  {unit}"


def markdown(benches: dict[str, Result]) -> str:
    """The table of ``benches`` as Markdown (for docs/performance.md)."""
    lines = ["| bench | measure | n | p50 | p90 | p99 | unit |", "|---|---|--:|--:|--:|--:|---|"]
    for name, result in benches.items():
        if "error" in result:
            lines.append(f"| {name} | FAILED: {result['error']} | | | | | |")
        for row in result.get("rows", []):
            cells = [_number(row[k]) if k in row else "" for k in ("n", "p50", "p90", "p99")]
            if "value" in row:
                cells = ["", _number(row["value"]), "", ""]
            measure = row["measure"].replace("->", "→")
            lines.append(f"| {name} | {measure} | {' | '.join(cells)} | {row.get('unit', '')} |")
    return "\n".join(lines)


def table(benches: dict[str, Result]) -> str:
    """The table of ``benches`` (name → result), one block per benchmark."""
    head = f"{'bench':<10} {'measure':<60} {'n':>5} {'p50':>8} {'p90':>8} {'p99':>8}  unit"
    lines = [head, "-" * len(head)]
    for name, result in benches.items():
        if "error" in result:
            lines.append(f"{name:<10} FAILED: {result['error']}")
        lines += [row_text(name, row) for row in result.get("rows", [])]
    return "\n".join(lines)


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    common.add_argument(
        "--out",
        type=Path,
        help=f"JSON results file (default {DEFAULT_OUT.relative_to(HERE.parent)})",
    )
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    sub = parser.add_subparsers(dest="bench", required=True, metavar="all|NAME")
    sub.add_parser("all", parents=[common], help="every benchmark below but latency, in order")
    shown = sub.add_parser("table", parents=[common], help="print the stored results, run nothing")
    shown.add_argument("--markdown", action="store_true", help="as a Markdown table")
    parsers = {}
    for name, module in (BENCHES | EXTRAS).items():
        parsers[name] = sub.add_parser(
            name,
            parents=[common],
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(parsers[name])
    return parser, parsers


def _load(path: Path) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"benches": {}}
    return loaded if isinstance(loaded.get("benches"), dict) else {"benches": {}}


def run_one(name: str, args: argparse.Namespace) -> Result:
    """Run benchmark ``name``; its result stamped with time, machine and load (or its error)."""
    before, started, wall = load_average(), datetime.datetime.now(datetime.UTC), time.monotonic()
    print(f"== {name}{' (quick)' if args.quick else ''}: {(BENCHES | EXTRAS)[name].HELP}")
    try:
        result: Result = (BENCHES | EXTRAS)[name].run(args)
    except Exception as exc:
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
    about = machine()
    about["load_average"] = {"before": before, "after": about["load_average"]}
    return result | {
        "ran_at": started.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - wall, 1),
        "quick": args.quick,
        "machine": about,
    }


def main(argv: list[str] | None = None) -> int:
    parser, parsers = _parsers()
    args = parser.parse_args(argv)
    if args.bench == "table":
        stored = _load(args.out or (QUICK_OUT if args.quick else DEFAULT_OUT))["benches"]
        print(markdown(stored) if args.markdown else table(stored))
        return 0
    if args.bench == "all":
        extra = ["--quick"] if args.quick else []
        runs = [(name, parsers[name].parse_args(extra)) for name in BENCHES]
    else:
        runs = [(args.bench, args)]
    out: Path = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    results = _load(out)
    done: dict[str, Result] = {}
    for name, ns in runs:
        done[name] = results["benches"][name] = run_one(name, ns)
        results["updated"] = done[name]["ran_at"]
        out.write_text(json.dumps(results, indent=1) + "\n")  # kept if a later one fails
        if len(runs) > 1:
            print(table({name: done[name]}), end="\n\n", flush=True)
    about = machine()
    print(
        f"machine: {about['cpu']}, {about['cores']} cores, {about['arch']}, "
        f"Linux {about['kernel']}, Python {about['python']}; load now "
        f"{' '.join(map(str, about['load_average']))}"
    )
    print(table(done))
    print(f"results: {out}")
    return 1 if any("error" in r for r in done.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
