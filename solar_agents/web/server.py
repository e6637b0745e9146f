"""The worker's web server around the views: health endpoints, a bound on requests served at once, and JSON
for every error it answers, including those aiohttp answers before any view (a request line over 8,190
bytes, bytes that are not HTTP).

The web server shares the event loop with the agents. So every answer must be cheap, and a crowd of clients
must not queue up work there: past ``WEB_MAX_CONCURRENT_REQUESTS`` requests in progress, a request gets a
503 at once. The health endpoints are never refused and do next to nothing: an orchestrator's probe must
get its answer while the pipeline is under full load.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

from solar_agents.observe.log import get_logger
from solar_agents.runtime.liveness import Liveness

log = get_logger(__name__)

HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """The API's error: ``{"error": message}`` with ``status``."""
    return web.json_response({"error": message}, status=status, headers={**HEADERS, **(headers or {})})


class Gate:
    """How many requests are in progress, and whether one more may start."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self.refused = 0

    def middleware(self) -> Any:
        @web.middleware
        async def bounded(request: web.Request, handler: Handler) -> web.StreamResponse:
            exempt = request.path in HEALTH_PATHS
            if not exempt and self.active >= self.limit:
                self.refused += 1
                return error_response(
                    503,
                    f"busy: {self.active} requests in progress (WEB_MAX_CONCURRENT_REQUESTS={self.limit}); "
                    "retry in a moment",
                    {"Retry-After": "1"},
                )
            self.active += not exempt
            try:
                return await handler(request)
            except web.HTTPException as exc:  # the router's 404 and 405, and any other HTTP error
                if exc.status < 400:
                    raise
                allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
                return error_response(exc.status, exc.reason.lower(), allow)
            finally:
                self.active -= not exempt

        return bounded


def _handle_error(
    self: RequestHandler,
    request: Any,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> web.StreamResponse:
    """aiohttp's answer to a request it could not read or a handler that failed, as the API's JSON error.
    The request line is never echoed (it may be 8 KB of anything); a client's bad bytes are logged at debug
    level only, so that a flood of them does not flood the log."""
    if status >= 500:
        log.error("web_request_failed", status=status, error=repr(exc)[:300])
    else:
        log.debug("web_request_unreadable", status=status, error=repr(exc)[:300])
    if request.writer.output_size > 0:  # as aiohttp: part of a response is out, the connection is broken
        raise ConnectionError("response already started, cannot send an error")
    if isinstance(exc, LineTooLong):
        text = "the request line or a header is longer than 8,190 bytes"
    elif status < 500:
        text = "the request could not be read as HTTP (bad bytes in the request line or headers)"
    else:
        text = HTTPStatus(status).phrase.lower() if status in HTTPStatus._value2member_map_ else "error"
    response = web.Response(
        status=status, text=json.dumps({"error": text}), content_type="application/json", headers=HEADERS
    )
    response.force_close()
    return response


def install_json_errors() -> None:
    """Make every aiohttp server answer its own errors as JSON (a method of aiohttp's request handler,
    replaced: there is no hook for it). Idempotent."""
    RequestHandler.handle_error = _handle_error  # type: ignore[method-assign]


def add_health(web_app: web.Application, liveness: Liveness) -> None:
    """``/healthz`` (live) and ``/readyz`` (ready): 200 or 503, with a JSON body saying why."""

    async def healthz(request: web.Request) -> web.StreamResponse:
        live, body = liveness.healthz()
        return web.json_response(body, status=200 if live else 503, headers=HEADERS)

    async def readyz(request: web.Request) -> web.StreamResponse:
        ready, body = liveness.readyz()
        return web.json_response(body, status=200 if ready else 503, headers=HEADERS)

    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/readyz", readyz)


def serve(web_app: web.Application, liveness: Liveness, max_concurrent: int) -> Gate:
    """The health endpoints, the bound on requests in progress and JSON errors, on ``web_app``."""
    install_json_errors()
    gate = Gate(max_concurrent)
    web_app.middlewares.append(gate.middleware())
    add_health(web_app, liveness)
    return gate
