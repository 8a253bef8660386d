"""The local server's voice list in Fish Audio's shape: ``GET /model`` and ``GET /model/{id}``.

Shapes from the official SDK (fish-audio-sdk 1.3.0, ``fishaudio/types/voices.py`` and
``types/shared.py``; query parameters from ``fishaudio/resources/voices.py``;
docs/protocols.md §3): a page is ``{total, items}``, a voice is ``{_id, type, title,
description, cover_image, train_mode, state, tags, samples, created_at, updated_at, languages,
visibility, lock_visibility, like_count, mark_count, shared_count, task_count, liked, marked,
author: {_id, nickname, avatar}}``; errors are JSON ``{status, message}``.

A voice's ``_id`` is what a client passes as ``reference_id`` on ``/v1/tts/live``. The list is
built from :class:`LocalVoice` records of both engines, Piper's then espeak-ng's; the first tag
and the ``author`` name the engine (``piper``, ``espeak-ng``).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edgespeak.config import ServerConfig
from edgespeak.server.refusals import error_response, refusal_response
from edgespeak.sources.espeak import EspeakVoice
from edgespeak.sources.voices import PiperVoiceInfo

if TYPE_CHECKING:
    from edgespeak.server.engines import LocalEngines

MODELS_PATH = "/model"
DEFAULT_PAGE_SIZE = 10  # the SDK's default
_GENDERS = {"M": "male", "F": "female"}


@dataclass(frozen=True)
class LocalVoice:
    """One voice this server can speak: ``id`` (its ``reference_id``), a ``title``, lower-cased
    BCP 47 ``languages``, ``tags`` (the engine's name first), and the engine as ``author``."""

    id: str
    title: str
    description: str
    languages: tuple[str, ...]
    tags: tuple[str, ...]
    author: str


def espeak_voices(voices: Iterable[EspeakVoice]) -> list[LocalVoice]:
    """espeak-ng's voices as :class:`LocalVoice`: tags ``espeak-ng`` and the gender."""
    return [
        LocalVoice(
            id=v.id,
            title=v.name.strip(),
            description=f"espeak-ng voice {v.file} ({v.language})",
            languages=v.languages,
            tags=("espeak-ng", *((_GENDERS[v.gender],) if v.gender else ())),
            author="espeak-ng",
        )
        for v in voices
    ]


def piper_voices(voices: Iterable[PiperVoiceInfo]) -> list[LocalVoice]:
    """Piper's voices as :class:`LocalVoice`: tags ``piper`` and the quality (``medium``)."""
    return [
        LocalVoice(
            id=v.id,
            title=v.id,
            description=f"Piper voice {v.id} ({v.language}, {v.sample_rate} Hz, {v.source})",
            languages=v.languages,
            tags=("piper", *((v.quality,) if v.quality else ())),
            author="piper",
        )
        for v in voices
    ]


def local_voices(engines: LocalEngines) -> list[LocalVoice]:
    """Every voice of the server: Piper's first (the default among them first), then
    espeak-ng's."""
    piper = sorted(engines.piper_voices(), key=lambda v: v.id != engines.default.id)
    espeak = engines.espeak.voice_list if engines.espeak is not None else []
    return piper_voices(piper) + espeak_voices(espeak)


def language_matches(wanted: str, languages: Sequence[str]) -> bool:
    """RFC 4647 basic filtering, case-insensitive: ``en`` matches ``en`` and ``en-us``."""
    wanted = wanted.lower()
    return any(lang == wanted or lang.startswith(wanted + "-") for lang in languages)


class ModelsHandler:
    """Serves the voice list, refused like ``/v1/tts/live`` (:func:`refusal_response`).

    ``served_since``: ISO 8601 time used as every voice's ``created_at``/``updated_at`` (the
    local voices carry no dates of their own).
    """

    def __init__(self, config: ServerConfig, voices: Sequence[LocalVoice]) -> None:
        self._config = config
        self._voices = list(voices)
        self._by_id = {v.id: v for v in self._voices}
        self.served_since = datetime.datetime.now(datetime.UTC).isoformat()

    async def list(self, request: web.Request) -> web.Response:
        """``GET /model``: ``{total, items}`` of the voices matching every filter given.

        Query: ``page_size`` (≥ 1, default 10), ``page_number`` (≥ 1, default 1); ``language``
        (repeatable; any matches, RFC 4647 prefix: ``en`` finds ``en-us``), ``tag`` (repeatable;
        all must be present), ``title`` (case-insensitive substring), ``author_id``; ``self=true``
        gives nothing (no voice here was made by the caller). ``sort_by`` and
        ``title_language`` are accepted and ignored: voices keep the engine's order.
        400 for a bad page number or size.
        """
        if (refused := refusal_response(self._config, request)) is not None:
            return refused
        query = request.query
        try:
            size = _positive(query, "page_size", DEFAULT_PAGE_SIZE)
            page = _positive(query, "page_number", 1)
        except ValueError as exc:
            return error_response(400, str(exc))
        languages = query.getall("language", [])
        tags = {t.lower() for t in query.getall("tag", [])}
        title = query.get("title", "").lower()
        author = query.get("author_id")
        mine = query.get("self", "false").lower() == "true"
        found = [
            v
            for v in self._voices
            if not mine
            and (not languages or any(language_matches(w, v.languages) for w in languages))
            and tags <= {t.lower() for t in v.tags}
            and title in v.title.lower()
            and author in (None, v.author)
        ]
        items = found[(page - 1) * size : page * size]
        return web.json_response({"total": len(found), "items": [self._json(v) for v in items]})

    async def get(self, request: web.Request) -> web.Response:
        """``GET /model/{id}``: the voice, or 404 ``{status, message}``."""
        if (refused := refusal_response(self._config, request)) is not None:
            return refused
        voice_id = request.match_info["id"]
        voice = self._by_id.get(voice_id)
        if voice is None:
            return error_response(404, f"unknown voice {voice_id!r}")
        return web.json_response(self._json(voice))

    def _json(self, v: LocalVoice) -> dict[str, Any]:
        """``v`` in the Fish ``Voice`` shape (every field the SDK requires)."""
        return {
            "_id": v.id,
            "type": "tts",
            "title": v.title,
            "description": v.description,
            "cover_image": "",
            "train_mode": "fast",
            "state": "trained",
            "tags": list(v.tags),
            "samples": [],
            "created_at": self.served_since,
            "updated_at": self.served_since,
            "languages": list(v.languages),
            "visibility": "public",
            "lock_visibility": True,
            "like_count": 0,
            "mark_count": 0,
            "shared_count": 0,
            "task_count": 0,
            "liked": False,
            "marked": False,
            "author": {"_id": v.author, "nickname": v.author, "avatar": ""},
        }


def _positive(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, not {raw!r}")
    return value


def add_model_routes(
    app: web.Application, config: ServerConfig, voices: Sequence[LocalVoice]
) -> None:
    """Route ``GET /model`` and ``GET /model/{id}`` on ``app`` to a :class:`ModelsHandler`."""
    handler = ModelsHandler(config, voices)
    app.router.add_get(MODELS_PATH, handler.list)
    app.router.add_get(MODELS_PATH + "/{id}", handler.get)
