"""The Fish TTSRequest one phrase is spoken with, and the part of it that names its audio.

:func:`tts_request` fills every TTSRequest field (docs/protocols.md §2) from ``[tts]``,
with the per-announcement choices of :class:`Overrides` on top. :func:`audio_identity` reduces
a request to what shapes the audio, for the phrase-cache key: reference audio becomes its
sha256, ``opus_bitrate`` becomes bits/s whichever convention was used, bitrates of other
formats and the text (keyed on its own) are left out.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass
from typing import Any

from edgespeak.base.announcement import Announcement
from edgespeak.config import Latency, Settings, TtsConfig
from edgespeak.wire import fish as fp

# Keyed by cache_key's own arguments (voice, format, sample rate, prosody, text).
_KEYED_APART = ("text", "format", "sample_rate", "reference_id", "prosody")
_DEFAULT_PROSODY = {"speed": 1.0, "volume": 0.0}


@dataclass(frozen=True)
class Overrides:
    """One announcement's choices; None = the ``[tts]`` setting.

    ``voice``: a Fish ``reference_id``. ``speed``: ``prosody.speed`` multiplier 0.5-2.0.
    ``volume_db``: ``prosody.volume`` in dB, -20..20. ``latency``: ``low``, ``normal`` or
    ``balanced``. Ranges are checked where the values are parsed (payload, config).
    """

    voice: str | None = None
    speed: float | None = None
    volume_db: float | None = None
    latency: Latency | None = None


def tts_request(tts: TtsConfig, overrides: Overrides | None = None) -> dict[str, Any]:
    """The full TTSRequest map (every field the official SDK sends) for ``[tts]`` settings
    ``tts`` and an announcement's ``overrides``. ``prosody`` is None unless ``[tts] prosody``
    or an override sets speed or volume; then both are sent."""
    o = overrides or Overrides()
    request = fp.build_request(
        format=tts.format, sample_rate=tts.sample_rate, reference_id=o.voice or tts.reference_id
    )
    speed = o.speed if o.speed is not None else (tts.prosody.speed if tts.prosody else None)
    volume = (
        o.volume_db if o.volume_db is not None else (tts.prosody.volume if tts.prosody else None)
    )
    prosody = None
    if speed is not None or volume is not None:
        prosody = {"speed": 1.0 if speed is None else speed, "volume": volume or 0.0}
    request.update(
        references=[{"audio": ref.data, "text": ref.text} for ref in tts.references],
        mp3_bitrate=tts.mp3_bitrate,
        opus_bitrate=tts.opus_bitrate,
        latency=o.latency or tts.latency,
        prosody=prosody,
        chunk_length=tts.chunk_length,
        normalize=tts.normalize,
        temperature=tts.temperature,
        top_p=tts.top_p,
    )
    return request


@functools.lru_cache(maxsize=16)
def _sha256(audio: bytes) -> str:
    """The hex sha256 of reference audio, computed once per loaded file: the same bytes
    objects (read at config load, up to 10 MiB) come with every announcement."""
    return hashlib.sha256(audio).hexdigest()


def audio_identity(request: dict[str, Any]) -> tuple[dict[str, float] | None, dict[str, Any]]:
    """``(prosody, options)`` of ``request`` for :func:`edgespeak.sources.cache.cache_key`: what
    changes the audio besides model, voice, format, sample rate and text. ``prosody`` is None
    when it is absent or the neutral ``{speed 1.0, volume 0}``. Raises ValueError for an
    ``opus_bitrate`` that is neither kbps nor bps."""
    prosody = request.get("prosody")
    if prosody is not None:
        prosody = {k: float(prosody.get(k, v)) for k, v in _DEFAULT_PROSODY.items()}
        if prosody == _DEFAULT_PROSODY:
            prosody = None
    options = {k: v for k, v in request.items() if k not in _KEYED_APART}
    options["references"] = [
        {"sha256": _sha256(ref["audio"]), "text": ref["text"]}
        for ref in request.get("references") or []
    ]
    fmt = request.get("format")
    if fmt != "mp3":
        options.pop("mp3_bitrate", None)
    bitrate = options.pop("opus_bitrate", None)
    if fmt == "opus":
        options["opus_bitrate_bps"] = fp.opus_bitrate_bps(bitrate)
    return prosody, options


def provider_request(
    settings: Settings, voice: str | None, overrides: Overrides | None = None
) -> dict[str, Any]:
    """The Fish TTSRequest for one announcement (docs/protocols.md §2): ``[tts]``, then
    ``overrides``, then ``voice`` (a reference_id; None = the override's or ``[tts]``'s)."""
    o = overrides or Overrides()
    return tts_request(settings.tts, dataclasses.replace(o, voice=voice or o.voice))


def announcement_request(settings: Settings, ann: Announcement) -> dict[str, Any]:
    """The TTSRequest for ``ann``: its voice, speed, volume_db and latency over ``[tts]``."""
    overrides = Overrides(
        voice=ann.voice, speed=ann.speed, volume_db=ann.volume_db, latency=ann.latency
    )
    return provider_request(settings, None, overrides)
