"""The provider client the settings ask for, and what shapes the audio it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgespeak.config import Settings
from edgespeak.providers import fish_request
from edgespeak.providers.client import TtsClient
from edgespeak.providers.fish import FishLiveClient

# Cartesia's modules are imported only when [tts] provider is "cartesia": what the daemon does
# not use costs it no memory.


def make_client(s: Settings) -> TtsClient:
    """The provider client for ``s`` (use it as an async context manager): Cartesia's or
    Fish's by ``[tts] provider``. Cartesia's default voice on the local server is
    ``[server] voice``."""
    if s.tts.provider == "cartesia":
        from edgespeak.providers import cartesia_request
        from edgespeak.providers.cartesia import CartesiaClient

        return CartesiaClient(
            s.tts_url,
            token=s.tts_token,
            model=s.tts.model,
            voice=cartesia_request.default_voice(s),
            language=s.tts.language,
            sample_rate=s.tts.rate_hz,
            version=s.tts.cartesia_version,
            max_buffer_delay_ms=s.tts.max_buffer_delay_ms,
            connect_timeout_s=s.tts.connect_timeout_s,
            first_audio_timeout_s=s.tts.first_audio_timeout_ms / 1000,
            heartbeat_s=s.tts.heartbeat_s,
            reconnect_max_s=s.tts.reconnect_max_s,
        )
    return FishLiveClient(
        s.tts_url,
        token=s.tts_token,
        model=s.tts.model,
        connect_timeout_s=s.tts.connect_timeout_s,
        first_audio_timeout_s=s.tts.first_audio_timeout_ms / 1000,
        heartbeat_s=s.tts.heartbeat_s,
        reconnect_max_s=s.tts.reconnect_max_s,
    )


@dataclass(frozen=True)
class AudioIdentity:
    """Everything besides the text that shapes a phrase's audio from one provider: the
    phrase-cache key's fields (:func:`edgespeak.sources.cache.cache_key`). ``sample_rate`` in
    Hz (None: the provider's default); ``prosody`` and ``options`` JSON-serialisable."""

    model: str
    voice: str | None
    format: str
    sample_rate: int | None
    prosody: dict[str, float] | None
    options: dict[str, Any]


def audio_identity(s: Settings, request: dict[str, Any]) -> AudioIdentity:
    """What shapes the audio of a phrase spoken with ``request`` (a
    :func:`~edgespeak.providers.fish_request.provider_request`) by the provider ``[tts]
    provider`` names: only what that provider is sent, as its own module reduces it
    (:func:`edgespeak.providers.fish_request.audio_identity`,
    :func:`edgespeak.providers.cartesia_request.audio_identity`). Raises ValueError for a Fish
    ``opus_bitrate`` that is neither kbps nor bps."""
    if s.tts.provider == "cartesia":
        from edgespeak.providers import cartesia_request

        sent = cartesia_request.audio_identity(s, request)
        output = sent["output_format"]
        return AudioIdentity(
            model=sent["model_id"],
            voice=sent["voice"]["id"] or None,
            format=output["encoding"],
            sample_rate=output["sample_rate"],
            prosody=None,
            options=sent,
        )
    prosody, options = fish_request.audio_identity(request)
    return AudioIdentity(
        model=s.tts.model,
        voice=request.get("reference_id"),
        format=str(request.get("format")),
        sample_rate=s.tts.rate_hz,
        prosody=prosody,
        options=options,
    )
