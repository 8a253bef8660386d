"""Persistent, content-addressed phrase cache: synthesised phrases stored as WAV files.

Layout of the cache directory::

    <dir>/<key>.wav          one entry: canonical 44-byte WAV header (as Python's ``wave``
                             writes it) + s16le mono PCM; playable with ``aplay``
    <dir>/index.sqlite3      the index (WAL mode, plus its ``-wal`` and ``-shm`` files):
                             table ``entries``, one row per entry, and table ``pins``, the
                             keys that must be stored pinned (stored yet or not)
    <dir>/.<key16>.<rnd>.tmp an entry being written (a writer in this or another process)

``key`` is :func:`cache_key`: 64 lowercase hex digits (sha256 over provider, endpoint, model,
voice, format, sample rate, prosody, the other request fields that shape the audio, and the
normalised text; :func:`phrase_key` takes them from what the configured provider is sent).
The daemon and the CLI may use one directory at once: sqlite serialises writers (busy
timeout 5 s), readers never wait (WAL).

Integrity. A writer streams PCM into a temporary file in the same directory, then
:meth:`CacheWriter.commit` completes the header and fsyncs it, and, in one index write
transaction, ``BEGIN IMMEDIATE`` → ``INSERT`` the row → ``os.replace`` the temporary file onto
``<key>.wav`` → fsync the directory → ``COMMIT``. Every change of a ``.wav`` file (rename in,
eviction, removal, dropping a bad entry) happens inside the index write transaction that records
it, so under the write lock the directory and the committed index agree, except for crash
leftovers. A row is what makes an entry exist: :meth:`PhraseCache.get` never plays a file
without a row, and checks on every read the file length (``44 + 2 * frames`` bytes), the WAV
parameters (mono, 16-bit, the row's rate and frame count) and the sha256 of the PCM against the
row. A bad entry (missing, truncated, empty, garbage, altered) is dropped (row and file), logged
at WARNING, and reported as a miss so the caller synthesises again: never played as silence.

Crash safety (SIGKILL or power loss at any moment). Before ``COMMIT`` the row does not exist
(sqlite rolls the transaction back): what is left is a ``.tmp`` file or an orphan ``.wav``,
neither of which plays. After ``COMMIT`` the row and the file, both fsynced, match. Opening the
cache reconciles, holding the index write lock: ``.tmp`` files older than 60 s are removed
(younger ones may belong to a live writer in another process), orphan ``.wav`` files (no row)
are removed, rows whose file is missing are removed, and the size bound is applied.

Bounds and pins. With ``max_bytes`` set, each commit evicts least recently used unpinned entries
until the entries' total ``size_bytes`` is at most ``max_bytes``. Recency is a sequence number
bumped on every commit and hit (one counter for all processes, taken under the index write
lock), so it never depends on wall-clock resolution or clock steps; ``last_used`` is kept for
display. Pinned entries are never evicted.

Modules: :mod:`.key` (keys), :mod:`.entry` (an entry and the check of its file),
:mod:`.index` (the sqlite index), :mod:`.writer` (:class:`CacheWriter`), :mod:`.bounds`
(eviction), :mod:`.reconcile` (crash leftovers at open), :mod:`.store` (:class:`PhraseCache`).
Importing this package loads neither numpy nor alsaaudio, so ``edgespeak cache list`` stays
light on a Pi Zero.

Failure policy: the cache never takes speech down. A directory or index that cannot be opened
leaves the cache ``usable = False``, behaving as an empty cache. A corrupt index is moved aside
(``index.sqlite3.corrupt``) and replaced by an empty one. Reading methods log and return an empty
result instead of raising; only :class:`CacheWriter` raises, and only :class:`OSError`.
"""

from edgespeak.base.pcm import WAV_HEADER_BYTES
from edgespeak.sources.cache.entry import CachedPhrase, Entry
from edgespeak.sources.cache.index import BUSY_TIMEOUT_S, INDEX_NAME, SCHEMA_VERSION
from edgespeak.sources.cache.key import KEY_VERSION, cache_key, normalise_text, phrase_key
from edgespeak.sources.cache.reconcile import TMP_GRACE_S
from edgespeak.sources.cache.store import PhraseCache
from edgespeak.sources.cache.writer import CacheWriter

__all__ = [
    "BUSY_TIMEOUT_S",
    "INDEX_NAME",
    "KEY_VERSION",
    "SCHEMA_VERSION",
    "TMP_GRACE_S",
    "WAV_HEADER_BYTES",
    "CacheWriter",
    "CachedPhrase",
    "Entry",
    "PhraseCache",
    "cache_key",
    "normalise_text",
    "phrase_key",
]
