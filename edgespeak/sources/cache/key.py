"""Phrase-cache keys: what one phrase, as one provider would speak it, is stored under.

A key is 64 lowercase hex digits: sha256 over a canonical JSON of the provider, endpoint,
model, voice, format, sample rate, prosody, any other request fields that shape the audio,
and the normalised text.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from edgespeak.config import Settings
from edgespeak.providers.factory import audio_identity
from edgespeak.providers.fish_request import provider_request

KEY_VERSION = 1  # bump to invalidate every key when what a key covers changes
KEY_RE = re.compile(r"[0-9a-f]{64}")


def normalise_text(text: str) -> str:
    """``text`` with every run of whitespace (Unicode included) folded to one space and the
    ends stripped; case and punctuation are kept."""
    return " ".join(text.split())


def cache_key(
    *,
    provider: str,
    endpoint: str,
    model: str,
    voice: str | None,
    format: str,
    sample_rate: int | None,
    prosody: Mapping[str, Any] | None,
    text: str,
    options: Mapping[str, Any] | None = None,
) -> str:
    """The key of one phrase as one provider would speak it: 64 lowercase hex digits.

    sha256 over a canonical JSON (sorted keys, compact, UTF-8) of every field, ``text``
    normalised by :func:`normalise_text`. ``sample_rate`` is the requested rate in Hz (None =
    provider default). ``prosody`` must be JSON-serialisable (else TypeError); an empty mapping
    counts as None. ``options``: any other request fields that shape the audio (JSON-
    serialisable; None adds nothing, so keys made without it are unchanged). Any other
    difference (case, voice, format…) gives another key.
    """
    body = {
        "v": KEY_VERSION,
        "provider": provider,
        "endpoint": endpoint,
        "model": model,
        "voice": voice,
        "format": format,
        "sample_rate": sample_rate,
        "prosody": dict(prosody) if prosody else None,
        "text": normalise_text(text),
    }
    if options is not None:
        body["options"] = dict(options)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def phrase_key(
    settings: Settings,
    endpoint: str,
    text: str,
    voice: str | None = None,
    *,
    request: dict[str, Any] | None = None,
) -> str:
    """The cache key of ``text`` spoken by the provider ``[tts] provider`` names: in ``voice``
    with the ``[tts]`` settings, or exactly as ``request`` (a
    :func:`~edgespeak.providers.fish_request.provider_request`) asks. It covers what that
    provider is sent and that changes the audio, nothing else
    (:func:`edgespeak.providers.factory.audio_identity`): for Fish prosody, reference audio,
    latency, bitrate…; for Cartesia model, voice, output format, language and API version.
    Raises ValueError for a Fish ``opus_bitrate`` that is neither kbps nor bps."""
    request = request if request is not None else provider_request(settings, voice)
    identity = audio_identity(settings, request)
    return cache_key(
        provider=settings.tts.provider,
        endpoint=endpoint,
        model=identity.model,
        voice=identity.voice,
        format=identity.format,
        sample_rate=identity.sample_rate,
        prosody=identity.prosody,
        options=identity.options,
        text=text,
    )
