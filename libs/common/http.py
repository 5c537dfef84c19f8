"""HTTP plumbing shared by every service: JSON answers, errors, bodies, clients' identity."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.typedefs import Middleware

from libs.common import metrics
from libs.common.api import ErrorBody, ErrorEnvelope
from libs.common.auth import tenant_for
from libs.common.errors import InvalidRequest, NotFound, SluiceError, TooLarge
from libs.common.settings import Settings

log = logging.getLogger(__name__)
_json = msgspec.json.Encoder()

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
    envelope = ErrorEnvelope(ErrorBody(type=error.type, message=error.message))
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
    """Turn every :class:`SluiceError` (and aiohttp's own 4xx) into the contract's JSON body."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except SluiceError as exc:
            error = exc
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            error = _from_http_exception(exc)
        labels = {"service": service, "type": error.type, "class": f"{error.status // 100}xx"}
        metrics.http_errors.add(1, labels)
        return error_response(error)

    return middleware


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refusing with 413 past ``limit`` without reading it all."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"body of {request.content_length} bytes exceeds the limit of {limit}")
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise TooLarge(f"body exceeds the limit of {limit} bytes")
    return body


def request_tenant(request: web.Request, settings: Settings) -> str:
    """The tenant named by the request's API key (``anonymous`` when keys are off)."""
    authorization = request.headers.get("Authorization") or request.query.get("api_key")
    return tenant_for(settings.keys_to_tenants, authorization)
