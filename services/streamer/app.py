"""Streamer HTTP surface: the SSE data plane."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
from collections.abc import AsyncIterator

from aiohttp import web
from opentelemetry.trace import SpanKind

from libs.common import metrics, sse, tracing
from libs.common.api import FINAL_STATUSES
from libs.common.auth import verify_read_token
from libs.common.errors import InvalidRequest, Overloaded, Unavailable
from libs.common.retry import TRANSIENT
from libs.common.service import NATS_CLIENT, REDIS_CLIENT, SETTINGS, create_base_app
from libs.common.settings import Settings
from libs.common.store import StreamMeta, StreamStore, stream_store
from libs.common.wire import StatusChange
from services.streamer import chat
from services.streamer.hub import Hub
from services.streamer.keys import HUB, STORE
from services.streamer.reader import EXPIRED, Reader, ReaderLimits


def last_event_id(request: web.Request) -> int:
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or "0"
    if not raw.strip().isdigit():
        raise InvalidRequest(f"Last-Event-ID must be a token index, got {raw!r}")
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
    verify_read_token(settings.effective_secret, stream_id, request.query.get("token"))
    after = last_event_id(request)
    if hub.reader_count >= settings.max_connections:
        raise Overloaded("this streamer holds its maximum of open streams", retry_after_s=1)
    meta = await readable_meta(store, stream_id)
    response = web.StreamResponse(headers=sse.RESPONSE_HEADERS)
    await response.prepare(request)
    if meta is None:
        error = {"type": EXPIRED.type, "message": EXPIRED.message, "retryable": False}
        await response.write(sse.RETRY + sse.json_frame("error", error))
        return response
    limits = ReaderLimits.from_settings(settings)
    reader = Reader(stream_id, response, request.transport, store, after, limits)
    if after:
        metrics.streamer_resumes.add(1)
    context = tracing.parent_of(meta.traceparent)
    with tracing.stream_span("deliver", stream_id, context, SpanKind.SERVER):
        await reader.open(StatusChange(status=meta.status))
        async with hub.reading(reader):
            await reader.serve()
    return response


def _raise_open_files_limit() -> None:
    """Each open stream is a socket: take every file descriptor the hard limit allows."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _hub(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    _raise_open_files_limit()
    app[STORE] = stream_store(app[REDIS_CLIENT], settings)
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
    chat.add_routes(app)
    return app
