"""Refusing a request to the local server, both endpoints: the JSON error Fish sends
(``{"status", "message"}``, shared/protocols.md §1 "HTTP"), the bearer-token check, and the
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


def refusal_response(config: ServerConfig, request: web.Request) -> web.Response | None:
    """The refusal for ``request`` (either endpoint), or None to serve it: the test switch
    ``test_refuse_status`` first, then 401 without the right bearer token (never echoing
    what was sent). Each refusal is logged at WARNING, one line per request."""
    if (status := config.test_refuse_status) is not None:
        log.warning("refused %s with %d (test switch test_refuse_status)", request.path, status)
        return error_response(status, f"refused by the test switch test_refuse_status={status}")
    if config.token is not None:
        expected = f"Bearer {config.token.get_secret_value()}"
        if not hmac.compare_digest(request.headers.get("Authorization", ""), expected):
            log.warning("refused %s with 401: invalid or missing bearer token", request.path)
            return error_response(401, "invalid or missing bearer token")
    return None
