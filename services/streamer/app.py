"""Streamer HTTP surface: the SSE data plane."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
from collections.abc import AsyncIterator

import msgspec
from aiohttp import web
from opentelemetry.trace import SpanKind

from libs.common import metrics, sse, tracing
from libs.common.api import FINAL_STATUSES
from libs.common.auth import is_stream_id, verify_read_token
from libs.common.boundary import classify, error_body
from libs.common.errors import InvalidRequest, NotFound, Overloaded, SluiceError, Unavailable
from libs.common.http import LIMITS
from libs.common.retry import TRANSIENT
from libs.common.service import NATS_CLIENT, REDIS_CLIENT, SETTINGS, create_base_app
from libs.common.settings import Settings
from libs.common.store import StreamMeta, StreamStore
from libs.common.wire import StatusChange
from services.streamer.hub import Hub
from services.streamer.reader import EXPIRED, Reader

HUB = web.AppKey("hub", Hub)
STORE = web.AppKey("store", StreamStore)
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


MAX_EVENT_ID_DIGITS = 18
"""A token index below 10**18 fits the log's 64-bit entry ids with room to spare."""


def last_event_id(request: web.Request) -> int:
    return parse_last_event_id(
        request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or "0"
    )


def parse_last_event_id(raw: str) -> int:
    """The token index to resume after; anything but a plain index is a 400."""
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit() and len(raw) <= MAX_EVENT_ID_DIGITS):
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise InvalidRequest(f"Last-Event-ID must be a token index below 10**18, got {shown!r}")
    return int(raw)


async def readable_meta(store: StreamStore, stream_id: str) -> StreamMeta | None:
    """The stream's meta; None once it or its finished log is gone.

    While Redis is out this is a retryable 503, never a stream that looks empty.
    """
    try:
        meta = await store.meta(stream_id)
        if meta and meta.status in FINAL_STATUSES and not await store.log_exists(stream_id):
            return None
    except TRANSIENT:
        raise Unavailable("the stream log is unreachable; retry shortly", retry_after_s=1) from None
    return meta


async def events(request: web.Request) -> web.StreamResponse:
    """``GET /v1/streams/{id}/events``: status at once, then tokens, then done."""
    settings, hub, store = request.app[SETTINGS], request.app[HUB], request.app[STORE]
    stream_id = request.match_info["id"]
    verify_read_token(settings.secrets, stream_id, request.query.get("token"))
    if not is_stream_id(stream_id):
        raise NotFound("no such stream")
    after = last_event_id(request)
    if hub.reader_count >= settings.max_connections:
        raise Overloaded("this streamer holds its maximum of open streams", retry_after_s=1)
    meta = await readable_meta(store, stream_id)
    tenant = meta.tenant if meta else ""
    with request.app[LIMITS].connection("SSE streams", tenant, settings.tenant_max_sse):
        return await _respond(request, stream_id, meta, after)


async def _respond(
    request: web.Request, stream_id: str, meta: StreamMeta | None, after: int
) -> web.StreamResponse:
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    if meta is None:
        error = {"type": EXPIRED.type, "message": EXPIRED.message, "retryable": False}
        await response.write(sse.RETRY + sse.json_frame("error", error))
        return response
    try:
        await _deliver(request, response, stream_id, meta, after)
    except ConnectionError:
        pass  # the client left
    except Exception as exc:  # headers are out: the failure is an event, never a cut body
        await response.write(sse.RETRY + sse.json_frame("error", _retryable(classify(exc))))
    return response


def _retryable(error: SluiceError) -> dict[str, object]:
    """An SSE ``error`` after the headers: the client reconnects with Last-Event-ID."""
    body = msgspec.to_builtins(error_body(error))
    return {**body, "retryable": True}


async def _deliver(
    request: web.Request, response: web.StreamResponse, stream_id: str, meta: StreamMeta, after: int
) -> None:
    settings, hub, store = request.app[SETTINGS], request.app[HUB], request.app[STORE]
    reader = Reader(
        stream_id,
        response,
        request.transport,
        store,
        after,
        buffer_bytes=settings.conn_buffer_bytes,
        heartbeat_s=settings.heartbeat_s,
        stall_timeout_s=settings.stall_timeout_s,
        send_buffer_bytes=settings.conn_sndbuf_bytes,
    )
    if after:
        metrics.streamer_resumes.add(1)
    context = tracing.parent_of(meta.traceparent)
    with tracing.stream_span("deliver", stream_id, context, SpanKind.SERVER):
        await reader.open(StatusChange(status=meta.status))
        async with hub.reading(reader):
            await reader.serve()


def _raise_open_files_limit() -> None:
    """Each open stream is a socket: take every file descriptor the hard limit allows."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _hub(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    _raise_open_files_limit()
    app[STORE] = StreamStore(app[REDIS_CLIENT], settings.log_ttl_s, settings.log_maxlen)
    streamer_id = f"{socket.gethostname()}-{os.getpid()}"
    app[HUB] = Hub(app[NATS_CLIENT], streamer_id, settings.reader_lease_s)
    app[HUB].start()
    yield
    await app[HUB].stop()


async def _tell_readers_to_reconnect(app: web.Application) -> None:
    """On SIGTERM every open stream gets ``reconnect`` and resumes on another replica."""
    readers = app[HUB].readers()
    for reader in readers:
        reader.close_for_shutdown()
    if readers:
        await asyncio.sleep(0)


def create_app(settings: Settings) -> web.Application:
    app = create_base_app(settings, "streamer")
    app.cleanup_ctx.append(_hub)
    app.on_shutdown.append(_tell_readers_to_reconnect)
    app.router.add_get("/v1/streams/{id}/events", events)
    from services.streamer import chat  # imported here: chat uses this module's app keys

    chat.add_routes(app)
    return app
