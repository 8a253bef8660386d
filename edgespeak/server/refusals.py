"""Refusing a request to the local server, every endpoint (Fish ``/v1/tts/live``,
``POST /v1/tts``, ``GET /model``, Cartesia's ``/tts/websocket``): the JSON error Fish sends
(``{"status", "message"}``, docs/protocols.md §3), the API key check, and the
``[server] test_refuse_status`` switch."""

from __future__ import annotations

import hmac
import logging

from aiohttp import web

from edgespeak.config import ServerConfig

log = logging.getLogger(__name__)


def error_response(status: int, message: str) -> web.Response:
    """A JSON ``{"status", "message"}`` error response with HTTP ``status``."""
    return web.json_response({"status": status, "message": message}, status=status)


def offered_keys(request: web.Request, *, cartesia: bool = False) -> list[str]:
    """The API keys ``request`` offers: an ``Authorization: Bearer`` token (Fish,
    docs/protocols.md §1; Cartesia §6), and with ``cartesia`` also Cartesia's other forms,
    the ``X-API-Key`` header and the ``api_key`` query parameter (§6). Empty ones left out."""
    bearer = request.headers.get("Authorization", "")
    keys = [bearer.removeprefix("Bearer ")] if bearer.startswith("Bearer ") else []
    if cartesia:
        keys += [request.headers.get("X-API-Key", ""), request.query.get("api_key", "")]
    return [key for key in keys if key]


def refusal_response(
    config: ServerConfig, request: web.Request, *, cartesia: bool = False
) -> web.Response | None:
    """The refusal for ``request``, or None to serve it: the test switch
    ``test_refuse_status`` first, then 401 unless ``[server] token`` is among the
    :func:`offered_keys` (``cartesia``: the Cartesia endpoint's forms count too), compared in
    constant time and never echoed. Each refusal is logged at WARNING, one line per request."""
    if (status := config.test_refuse_status) is not None:
        log.warning("refused %s with %d (test switch test_refuse_status)", request.path, status)
        return error_response(status, f"refused by the test switch test_refuse_status={status}")
    if config.token is None:
        return None
    token = config.token.get_secret_value().encode()
    offered = offered_keys(request, cartesia=cartesia)
    if not any(hmac.compare_digest(key.encode(), token) for key in offered):
        why = f"invalid or missing {'API key' if cartesia else 'bearer token'}"
        log.warning("refused %s with 401: %s", request.path, why)
        return error_response(401, why)
    return None
