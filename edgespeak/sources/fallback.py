"""The offline fallback engine the settings ask for."""

from __future__ import annotations

import logging

from edgespeak.base.errors import TtsError
from edgespeak.config import Settings
from edgespeak.sources.espeak import EspeakEngine

log = logging.getLogger(__name__)


def fallback_engine(s: Settings) -> EspeakEngine | None:
    """The offline fallback engine, or None (disabled, or espeak-ng missing: logged)."""
    if not s.fallback.enabled:
        return None
    try:
        return EspeakEngine(voice=s.fallback.voice)
    except TtsError as exc:
        log.warning("offline fallback disabled: %s", exc)
        return None
