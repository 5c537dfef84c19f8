"""Operator endpoints (``/metrics``, ``/dashboard``) kept off the public surface.

With ``SLUICE_ADMIN_PORT`` each service also listens on that port, which serves the
operator endpoints and the health probes and nothing else, and the public port does
not serve them. Otherwise ``SLUICE_ADMIN_TOKEN``, when set, is required for them on
the public port (``Authorization: Bearer`` or, for a browser opening the dashboard,
``?admin_token=``). With neither, as in development, they are open; production
(``SLUICE_ENV=production``) refuses to start that way.
"""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Middleware

from libs.common.errors import NotFound, Unauthorized
from libs.common.http import Handler
from libs.common.settings import Settings

PROBES = frozenset({"/healthz", "/readyz"})


def is_operator_path(path: str) -> bool:
    return path == "/metrics" or path == "/dashboard" or path.startswith("/dashboard/")


def _local_port(request: web.Request) -> int | None:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    return int(sockname[1]) if sockname else None


def _check_token(request: web.Request, token: str) -> None:
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    given = given or request.query.get("admin_token", "")
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthorized("this operator endpoint needs SLUICE_ADMIN_TOKEN")


def operator_middleware(settings: Settings) -> Middleware:
    """Route operator endpoints to the admin port, or behind the admin token."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        operator = is_operator_path(request.path)
        if settings.admin_port and _local_port(request) == settings.admin_port:
            if not (operator or request.path in PROBES):
                raise NotFound("no such route")
        elif operator:
            if settings.admin_port:
                raise NotFound("no such route")
            if settings.admin_token:
                _check_token(request, settings.admin_token)
        return await handler(request)

    return middleware
