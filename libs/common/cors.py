"""Cross-origin access for browser pages (``SLUICE_CORS_ORIGINS``).

A page served by one origin (the gateway's chat page, or a team's own app) calls the
gateway and reads SSE from the streamer, which under ``sluice dev`` is another
origin. Listed origins get the CORS headers, a preflight answer and the headers a
client needs to read (the stream id, ``Retry-After``); any other origin gets none,
so its browser refuses the answer. ``*`` admits every origin. Credentials (cookies)
are never admitted: sluice authenticates with a bearer key, which a preflight allows
as the ``Authorization`` header.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from libs.common.errors import Forbidden

ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID"
EXPOSE_HEADERS = "X-Sluice-Stream-Id, Retry-After"
PREFLIGHT_MAX_AGE_S = "600"


class Cors:
    """The allowed origins, and the two hooks that apply them to an app."""

    def __init__(self, setting: str) -> None:
        origins = {o.strip().rstrip("/") for o in setting.split(",") if o.strip()}
        self.any_origin = "*" in origins
        self.origins = frozenset(origins - {"*"})

    def install(self, app: web.Application) -> None:
        """Preflights are answered by a middleware; every response (SSE too) is marked at prepare."""
        app.middlewares.append(self.preflight)
        app.on_response_prepare.append(self.mark)

    def allowed(self, origin: str | None) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for ``origin``, or None to refuse it."""
        if origin is None:
            return None
        if self.any_origin:
            return "*"
        return origin if origin in self.origins else None

    @web.middleware
    async def preflight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return await handler(request)
        origin = request.headers.get("Origin")
        if self.allowed(origin) is None:
            raise Forbidden(f"origin {origin} may not call this service")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": PREFLIGHT_MAX_AGE_S,
            },
        )

    async def mark(self, request: web.Request, response: web.StreamResponse) -> None:
        allow = self.allowed(request.headers.get("Origin"))
        if allow is None:
            return
        response.headers["Access-Control-Allow-Origin"] = allow
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        if allow != "*":
            response.headers.add("Vary", "Origin")
