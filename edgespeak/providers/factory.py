"""The provider client the settings ask for."""

from __future__ import annotations

from edgespeak.config import Settings
from edgespeak.providers.cartesia import CartesiaClient
from edgespeak.providers.client import TtsClient
from edgespeak.providers.fish import FishLiveClient


def make_client(s: Settings) -> TtsClient:
    """The provider client for ``s`` (use it as an async context manager): Cartesia's or
    Fish's by ``[tts] provider``. Cartesia's default voice on the local server is
    ``[server] voice``."""
    if s.tts.provider == "cartesia":
        local = s.tts.url is None
        return CartesiaClient(
            s.tts_url,
            token=s.tts_token,
            model=s.tts.model,
            voice=s.tts.reference_id or (s.server.voice if local else None),
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
