"""``POST /v1/tts`` on the local server: one TTSRequest in, the whole audio back, chunked.

Shape from docs/protocols.md §3 and the official SDK (``fishaudio`` 1.3.0,
``resources/tts.py``: ``convert``/``stream`` post a MessagePack TTSRequest with
``Content-Type: application/msgpack`` and a ``model`` header, then read the body as audio;
``core/client_wrapper.py`` reads an error's ``message`` from a JSON body). A JSON body is
accepted too. Errors are JSON ``{"status": …, "message": …}`` with that HTTP status; once
audio has started, a failure can only cut the chunked body short.
"""

from __future__ import annotations

import contextlib
import json
import logging

import ormsgpack
from aiohttp import web

from edgespeak.config import ServerConfig
from edgespeak.server.engines import LocalEngines
from edgespeak.server.output import OutputStream, UnsupportedRequest
from edgespeak.server.refusals import error_response, refusal_response
from edgespeak.server.request import parse_request
from edgespeak.sources.espeak import EngineError

log = logging.getLogger(__name__)

HTTP_PATH = "/v1/tts"
MAX_BODY_BYTES = 16 * 1024 * 1024  # reference audio travels in the body
CONTENT_TYPES = {"pcm": "audio/pcm", "wav": "audio/wav", "opus": "audio/ogg"}


class HttpTts:
    """Serves ``POST /v1/tts`` with ``engines`` under ``config`` (token, limits, switches)."""

    def __init__(self, config: ServerConfig, engines: LocalEngines) -> None:
        self._config = config
        self._engines = engines

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Check everything before the first byte of audio, then stream it chunked."""
        if (refused := refusal_response(self._config, request)) is not None:
            return refused
        try:
            body = await _read_body(request)
            spec = parse_request(body)
            text = spec.text.strip()
            if not text:
                raise UnsupportedRequest("request field 'text' is empty")
            if len(text) > self._config.max_text_chars:
                raise UnsupportedRequest(f"text exceeds {self._config.max_text_chars} characters")
            voice = self._engines.choose(spec.voice)
            output = OutputStream(
                spec.format,
                spec.sample_rate,
                self._engines.rate_hz(voice),
                spec.opus_bitrate,
                gain_db=spec.volume_db,
            )
        except (UnsupportedRequest, EngineError) as exc:
            log.warning("POST %s refused: %s", HTTP_PATH, exc)
            return error_response(400, str(exc))
        if self._config.test_session_fault != "none":
            return error_response(500, f"test switch: {self._config.test_session_fault}")
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPES[output.format]})
        response.enable_chunked_encoding()
        await response.prepare(request)
        speech = self._engines.synthesize(text, voice, speed=spec.speed)
        async with contextlib.aclosing(speech):
            async for pcm in speech:
                if encoded := output.write(pcm):
                    await response.write(encoded)
        await response.write(output.close())
        await response.write_eof()
        log.info("POST %s: %d characters as %s", HTTP_PATH, len(text), output.format)
        return response


async def _read_body(request: web.Request) -> object:
    """The TTSRequest map of a MessagePack or JSON body (at most ``MAX_BODY_BYTES``).
    Raises UnsupportedRequest saying what is wrong with it."""
    data = bytearray()
    while chunk := await request.content.read(65536):
        data += chunk
        if len(data) > MAX_BODY_BYTES:
            raise UnsupportedRequest(f"request body exceeds {MAX_BODY_BYTES} bytes")
    kind = request.content_type
    try:
        if kind == "application/msgpack":
            return ormsgpack.unpackb(bytes(data))
        if kind == "application/json":
            return json.loads(data)
    except (ormsgpack.MsgpackDecodeError, ValueError) as exc:
        raise UnsupportedRequest(f"request body is not valid {kind}: {exc}") from None
    raise UnsupportedRequest(
        f"Content-Type {kind!r} is not supported; send application/msgpack or application/json"
    )


def add_http_tts(app: web.Application, config: ServerConfig, engines: LocalEngines) -> None:
    """Register ``POST /v1/tts`` on ``app``."""
    app.router.add_post(HTTP_PATH, HttpTts(config, engines).handle)
