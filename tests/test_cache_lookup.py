"""The speaker's phrase-cache lookup: the request and key it keeps per text and options are
those the announcement would get built afresh, so a phrase said with other options misses."""

from __future__ import annotations

from pathlib import Path

from edgespeak.audio.alsa import AlsaSink
from edgespeak.base.announcement import Announcement
from edgespeak.config import Settings
from edgespeak.providers.fish_request import announcement_request
from edgespeak.sources.cache import PhraseCache, phrase_key
from edgespeak.speaking.lookup import CacheLookup
from tests.cache_support import pcm_for, store

ENDPOINT = "ws://127.0.0.1:9/v1/tts/live"


async def test_a_phrase_said_again_hits_only_with_the_options_it_was_stored_with(
    tmp_path: Path,
) -> None:
    settings = Settings(tts={"url": ENDPOINT})
    stored = Announcement("Front door open.", voice="alice", speed=1.2)
    key = phrase_key(
        settings, ENDPOINT, stored.text, request=announcement_request(settings, stored)
    )
    pcm = pcm_for(7)
    with PhraseCache(tmp_path / "cache") as cache:
        store(cache, key, pcm, text=stored.text)
        lookup = CacheLookup(settings, ENDPOINT, cache, AlsaSink("default"))
        for _ in range(2):  # built, then kept
            request, got, hit = await lookup.result(
                Announcement(stored.text, voice="alice", speed=1.2), prime=False
            )
            assert (got, request) == (key, announcement_request(settings, stored))
            assert hit is not None and hit.pcm == pcm
        for other in (
            Announcement(stored.text, voice="bob", speed=1.2),
            Announcement(stored.text, voice="alice", speed=1.0),
            Announcement(stored.text, voice="alice", speed=1.2, volume_db=-6.0),
            Announcement(stored.text, voice="alice", speed=1.2, latency="normal"),
            Announcement("Back door open.", voice="alice", speed=1.2),
        ):
            request, got, hit = await lookup.result(other, prime=False)
            assert got != key and hit is None, other
            assert request == announcement_request(settings, other)


class CountedSink(AlsaSink):
    """A real sink (never opened here) that counts the primes asked of it."""

    def __init__(self) -> None:
        super().__init__("default")
        self.primes = 0

    def prime(self) -> None:
        self.primes += 1
        super().prime()


async def test_an_announcement_that_plays_next_primes_the_sink_unless_it_is_a_download(
    tmp_path: Path,
) -> None:
    """The sink is primed as soon as the announcement is known to play next, for a phrase
    (looked up meanwhile) and a ready sound alike, whatever inlet it came from; a media URL's
    first audio is a download away, so its sink is left as it is."""
    sink = CountedSink()
    with PhraseCache(tmp_path / "cache") as cache:
        lookup = CacheLookup(Settings(tts={"url": ENDPOINT}), ENDPOINT, cache, sink)
        try:
            lookup.start(Announcement("Front door open."))
            assert sink.primes == 1
            lookup.start(Announcement("chime", sound=b"\0\0" * 100, sound_rate_hz=22050))
            assert sink.primes == 2
            lookup.start(Announcement("radio", url="http://127.0.0.1:9/news.mp3"))
            assert sink.primes == 2
        finally:
            lookup.forget()
            sink.close()
