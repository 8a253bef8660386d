"""What a Cartesia context is generated with, and the part of it that names its audio.

:class:`~edgespeak.providers.cartesia.CartesiaClient` sends every input of a context with the
same ``model_id``, ``voice`` (``{mode: "id", id}``: the announcement's ``reference_id``, else
the client's default voice), ``output_format`` (raw ``pcm_s16le`` at ``[tts] sample_rate``),
``language`` when set, and ``max_buffer_delay_ms``, under the ``Cartesia-Version`` header
(docs/protocols.md §6). :func:`audio_identity` is that, minus what does not change the
audio, for the phrase-cache key. The Fish-only fields of the announcement's request (prosody,
latency, references, bitrates, temperature…) never reach Cartesia and are not part of it.
"""

from __future__ import annotations

from typing import Any

from edgespeak.config import Settings
from edgespeak.wire import cartesia as cp

# The whole transcript goes in a context's first input, so the buffering delay only moves
# when generation starts, not what it says.
_TIMING_ONLY = frozenset({"max_buffer_delay_ms"})


# A Cartesia voice id (a UUID) for the local server: it speaks any such id in its default voice.
SERVER_DEFAULT_VOICE = "00000000-0000-0000-0000-000000000000"


def default_voice(settings: Settings) -> str | None:
    """The voice id of an announcement without one: ``[tts] reference_id``, else, on the local
    server (``[tts] url`` unset), ``[server] voice``, or when that is unset too
    :data:`SERVER_DEFAULT_VOICE` (the server's own default); None when there is none."""
    local = settings.tts.url is None
    server_voice = settings.server.voice or SERVER_DEFAULT_VOICE
    return settings.tts.reference_id or (server_voice if local else None)


def audio_identity(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    """What shapes the audio of a phrase spoken with ``request`` (a
    :func:`~edgespeak.providers.fish_request.provider_request`; only its ``reference_id``
    reaches Cartesia) under ``settings``: the generation-request fields every input of the
    context repeats (``model_id``, ``voice``, ``output_format``, ``language`` when set) and
    ``cartesia_version``, the API version that reads them. JSON-serialisable."""
    voice = request.get("reference_id") or default_voice(settings)
    sent = cp.generation_request(
        context_id="",
        model_id=settings.tts.model,
        voice_id=voice or "",
        transcript="",
        sample_rate=settings.tts.rate_hz,
        continue_=False,
        language=settings.tts.language,
        max_buffer_delay_ms=settings.tts.max_buffer_delay_ms,
    )
    identity = {
        k: v for k, v in sent.items() if k not in cp.PER_INPUT_FIELDS and k not in _TIMING_ONLY
    }
    identity["cartesia_version"] = settings.tts.cartesia_version
    return identity
