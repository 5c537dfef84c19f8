"""HTTP plumbing shared by every service: JSON answers, errors, bodies, clients' identity."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.typedefs import Middleware

from libs.common import metrics
from libs.common.api import ErrorEnvelope
from libs.common.boundary import classify, error_body
from libs.common.errors import InvalidRequest, NotFound, SluiceError, TooLarge
from libs.common.keys import key_ring
from libs.common.limits import TenantLimits
from libs.common.settings import Settings

log = logging.getLogger(__name__)
_json = msgspec.json.Encoder()

LIMITS = web.AppKey("limits", TenantLimits)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_json.encode(payload), status=status, content_type="application/json", headers=headers
    )


def error_response(error: SluiceError) -> web.Response:
    headers = {}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after_s)))
    envelope = ErrorEnvelope(error_body(error))
    return json_response(envelope, status=error.status, headers=headers)


def _from_http_exception(exc: web.HTTPException) -> SluiceError:
    if exc.status == 404:
        return NotFound("no such route")
    if exc.status == 413:
        return TooLarge("request body too large")
    error = InvalidRequest(exc.reason)
    error.status = exc.status  # type: ignore[misc]  # keep aiohttp's status (405, 414, ...)
    return error


def error_middleware(service: str) -> Middleware:
    """Answer every failure in the contract's JSON body (see :mod:`libs.common.boundary`)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            error = _from_http_exception(exc)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            error = classify(exc)
        labels = {"service": service, "type": error.type, "class": f"{error.status // 100}xx"}
        metrics.http_errors.add(1, labels)
        return error_response(error)

    return middleware


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole request body, however it arrives in pieces; 413 past ``limit``, without
    reading further."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"body of {request.content_length} bytes exceeds the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def request_tenant(request: web.Request, settings: Settings, *, query_key: bool = False) -> str:
    """The tenant named by the request's API key (``anonymous`` when keys are off), counted
    against its request rate.

    ``?api_key=`` counts only where ``query_key`` says a browser cannot send a header (a
    WebSocket); anywhere else a key in the URL would end up in access logs and histories.
    """
    authorization = request.headers.get("Authorization")
    if authorization is None and query_key:
        authorization = request.query.get("api_key")
    tenant = key_ring(settings.api_keys, settings.api_keys_file).tenant_for(authorization)
    request.app[LIMITS].request(tenant)
    return tenant
