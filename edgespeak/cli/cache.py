"""``edgespeak cache list | warm | verify | purge [--unpinned]``: look after the phrase cache.

Works on ``[cache] dir`` while the daemon runs (the index is shared through sqlite). Sizes are
printed in binary units (KiB, MiB); ``warm`` and ``verify`` show a progress bar on stderr.
Exit codes: 0 fine, 1 something failed (a phrase not synthesised, a damaged entry dropped),
2 the cache cannot be used.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import humanize
from tqdm import tqdm

from edgespeak.config import Phrase, Settings
from edgespeak.providers.factory import make_client
from edgespeak.sources.cache import PhraseCache
from edgespeak.sources.synthesis import Synthesizer
from edgespeak.sources.warmer import PhraseWarmer, WarmResult

TEXT_WIDTH = 48


def _open(settings: Settings) -> PhraseCache | None:
    cache = PhraseCache(settings.cache.dir, max_bytes=settings.cache.max_bytes)
    if not cache.usable:
        print(f"edgespeak: cannot use the phrase cache {settings.cache.dir}", file=sys.stderr)
        return None
    return cache


def size(n: int) -> str:
    """``n`` bytes in binary units: ``1.5 MiB``."""
    return humanize.naturalsize(n, binary=True)


def list_entries(settings: Settings) -> int:
    """Print one line per entry, most recently used first, then the totals."""
    cache = _open(settings)
    if cache is None:
        return 2
    entries = cache.entries()
    print(f"{'pin':3} {'hits':>5} {'size':>10} {'secs':>6} {'last used':16} {'voice':10} text")
    for e in entries:
        text = e.text if len(e.text) <= TEXT_WIDTH else e.text[: TEXT_WIDTH - 1] + "…"
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
        print(
            f"{'*' if e.pinned else '':3} {e.hits:5d} {size(e.size_bytes):>10} "
            f"{e.duration_s:6.1f} {used:16} {(e.voice or '-')[:10]:10} {text}"
        )
    pinned = sum(e.pinned for e in entries)
    bound = size(cache.max_bytes) if cache.max_bytes is not None else "unbounded"
    print(
        f"{len(entries)} entries ({pinned} pinned), {size(cache.total_bytes())} of {bound} "
        f"in {cache.dir}"
    )
    cache.close()
    return 0


async def warm(settings: Settings, texts: Sequence[str]) -> int:
    """Synthesise the configured phrases (pinned) and ``texts`` (not pinned) into the cache."""
    cache = _open(settings)
    if cache is None:
        return 2
    extra = tuple(Phrase(text=t) for t in texts)
    failed: list[WarmResult] = []
    async with make_client(settings) as tts:
        synth = Synthesizer(tts, settings.tts.format, settings.tts.rate_hz, cache)
        pinned = PhraseWarmer(settings, synth, tts.url, cache)
        unpinned = PhraseWarmer(settings, synth, tts.url, cache, phrases=extra)
        await pinned.pin()
        with tqdm(total=len(pinned.phrases) + len(extra), desc="warm", unit="phrase") as bar:

            def step(result: WarmResult) -> None:
                bar.update()
                if result.outcome == "failed":
                    failed.append(result)
                    bar.write(f"failed: {result.phrase.text!r}: {result.error}")

            await pinned.warm_once(step)
            await unpinned.warm_once(step)
    print(f"{len(cache.entries())} entries, {size(cache.total_bytes())}; {len(failed)} failed")
    cache.close()
    return 1 if failed else 0


def verify(settings: Settings) -> int:
    """Check every entry's length and checksum; damaged ones are dropped (synthesised anew)."""
    cache = _open(settings)
    if cache is None:
        return 2
    bad = 0
    entries = cache.entries()
    for entry in tqdm(entries, desc="verify", unit="entry"):
        problem = cache.verify(entry.key)
        if problem is not None:
            bad += 1
            tqdm.write(f"dropped {entry.text!r}: {problem}")
    print(f"{len(entries) - bad} of {len(entries)} entries good, {bad} dropped")
    cache.close()
    return 1 if bad else 0


def purge(settings: Settings, *, unpinned_only: bool) -> int:
    """Remove every entry (or only the unpinned ones)."""
    cache = _open(settings)
    if cache is None:
        return 2
    before = cache.total_bytes()
    removed = cache.purge(unpinned_only=unpinned_only)
    print(f"removed {removed} entries, {size(before - cache.total_bytes())} freed")
    cache.close()
    return 0
