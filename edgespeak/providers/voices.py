"""A client for the provider's voice list: Fish Audio's ``GET /model`` and ``GET /model/{id}``.

Spoken to over HTTP at the base derived from the live WebSocket URL (:func:`http_base`), with
the same bearer key. Request and response shapes from the official SDK (fish-audio-sdk 1.3.0,
``fishaudio/resources/voices.py``, ``fishaudio/types/voices.py``; docs/protocols.md §3);
edgespeak's own server answers in the same shape (:mod:`edgespeak.server.models`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from edgespeak.base.errors import TtsError, TtsProtocolError, TtsRejected, TtsUnavailable
from edgespeak.wire.fish import LIVE_PATH

TOTAL_TIMEOUT_S = 30.0


class UnknownVoice(TtsError):
    """The provider has no voice with that id (404)."""


class Voice(BaseModel):
    """A voice model as the provider describes it. ``id`` is what ``reference_id`` (an
    announcement's ``voice``) takes. Fields the provider adds beyond these are kept (extra)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str = Field(alias="_id")
    title: str = ""
    description: str = ""
    languages: list[str] = []
    tags: list[str] = []


class VoicePage(BaseModel):
    """One page of ``GET /model``: ``total`` voices match, ``items`` are this page's."""

    model_config = ConfigDict(extra="allow")

    total: int
    items: list[Voice]


def http_base(live_url: str) -> str:
    """The HTTP(S) base of the API whose live endpoint is ``live_url``: ``ws`` → ``http``,
    ``wss`` → ``https``, the ``/v1/tts/live`` path (and anything after it) dropped, a path
    before it kept (``wss://proxy/fish/v1/tts/live`` → ``https://proxy/fish``). Without that
    path, the origin alone (scheme, host, port)."""
    parts = urlsplit(live_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path
    prefix = path[: path.index(LIVE_PATH)] if LIVE_PATH in path else ""
    return urlunsplit((scheme, parts.netloc, prefix.rstrip("/"), "", ""))


class VoicesClient:
    """Lists and looks up voices at ``base`` (see :func:`http_base`); ``token``: bearer key,
    sent only in the ``Authorization`` header. Use as an async context manager.

    Errors (messages never carry the key): TtsUnavailable (unreachable, timeout after
    ``connect_timeout_s`` seconds to connect or 30 s in all, 5xx), TtsRejected (401/403 key
    refused, other 4xx, with ``status``), UnknownVoice (404 on :meth:`get`), TtsProtocolError
    (an answer that is not the documented JSON).
    """

    def __init__(
        self, base: str, *, token: SecretStr | None, connect_timeout_s: float = 5.0
    ) -> None:
        self.base = base.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=TOTAL_TIMEOUT_S, connect=connect_timeout_s)
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> VoicesClient:
        headers = {"Accept": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        self._http = aiohttp.ClientSession(headers=headers, timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._http is not None:
            await self._http.close()

    async def list(
        self,
        *,
        language: list[str] | None = None,
        tags: list[str] | None = None,
        title: str | None = None,
        mine: bool = False,
        page_size: int = 10,
        page_number: int = 1,
    ) -> VoicePage:
        """One page (1-based ``page_number``, ``page_size`` voices) of the voices matching the
        filters: any of ``language``, every one of ``tags``, ``title``; ``mine``: only the
        account's own voices (``self=true``)."""
        params: list[tuple[str, str]] = [
            ("page_size", str(page_size)),
            ("page_number", str(page_number)),
        ]
        params += [("language", code) for code in language or []]
        params += [("tag", tag) for tag in tags or []]
        if title:
            params.append(("title", title))
        if mine:
            params.append(("self", "true"))
        body = await self._get("/model", params, what="the voice list")
        try:
            return VoicePage.model_validate(body)
        except ValidationError as exc:
            raise TtsProtocolError(f"{self.base}/model: not a voice list: {_first(exc)}") from None

    async def get(self, voice_id: str) -> Voice:
        """The voice ``voice_id``; UnknownVoice when the provider has none of that id."""
        path = "/model/" + quote(voice_id, safe="")
        body = await self._get(path, [], what=f"voice {voice_id!r}")
        try:
            return Voice.model_validate(body)
        except ValidationError as exc:
            raise TtsProtocolError(f"{self.base}{path}: not a voice: {_first(exc)}") from None

    async def _get(self, path: str, params: Sequence[tuple[str, str]], *, what: str) -> Any:
        assert self._http is not None, "use VoicesClient as an async context manager"
        url = self.base + path
        try:
            async with self._http.get(url, params=params) as response:
                status, text = response.status, await response.text(errors="replace")
        except TimeoutError:
            raise TtsUnavailable(f"no answer from {self.base} within the timeout") from None
        except (aiohttp.ClientError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise TtsUnavailable(f"cannot reach {self.base}: {reason}") from None
        if status == 200:
            try:
                return json.loads(text)
            except ValueError:
                raise TtsProtocolError(f"{url}: the answer is not JSON") from None
        message = _message(text)
        if status == 404 and path != "/model":
            raise UnknownVoice(f"unknown {what} at {self.base}")
        if status == 404:
            raise TtsRejected(f"{self.base} has no voice list (GET /model: 404)", status)
        if status in (401, 403):
            raise TtsRejected(
                f"{self.base} refused the API key ({status}: {message}); "
                "check [tts] api_key (or [server] token for the local server)",
                status,
            )
        if status >= 500:
            raise TtsUnavailable(f"{self.base}: server error {status} for {what}: {message}")
        raise TtsRejected(
            f"{self.base} refused the request for {what} ({status}: {message})", status
        )


def _message(text: str) -> str:
    """The ``message`` of a Fish error body ``{status, message}``, else the body, shortened."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message") or body.get("detail"), str):
        text = body.get("message") or body["detail"]
    text = " ".join(text.split())
    return text[:200] or "no detail given"


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
