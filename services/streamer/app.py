"""Streamer HTTP surface: the SSE data plane."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator

from aiohttp import web

from libs.common import metrics, sse
from libs.common.api import FINAL_STATUSES
from libs.common.auth import verify_read_token
from libs.common.errors import InvalidRequest, Overloaded
from libs.common.service import NATS_CLIENT, REDIS_CLIENT, SETTINGS, create_base_app
from libs.common.settings import Settings
from libs.common.store import StreamStore
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


def last_event_id(request: web.Request) -> int:
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or "0"
    if not raw.strip().isdigit():
        raise InvalidRequest(f"Last-Event-ID must be a token index, got {raw!r}")
    return int(raw)


async def events(request: web.Request) -> web.StreamResponse:
    """``GET /v1/streams/{id}/events``: status at once, then tokens, then done."""
    settings, hub, store = request.app[SETTINGS], request.app[HUB], request.app[STORE]
    stream_id = request.match_info["id"]
    verify_read_token(settings.effective_secret, stream_id, request.query.get("token"))
    after = last_event_id(request)
    if len(hub.readers()) >= settings.max_connections:
        raise Overloaded("this streamer holds its maximum of open streams", retry_after_s=1)
    meta = await store.meta(stream_id)
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    if meta is None or (meta.status in FINAL_STATUSES and not await store.log_exists(stream_id)):
        error = {"type": EXPIRED.type, "message": EXPIRED.message, "retryable": False}
        await response.write(sse.RETRY + sse.json_frame("error", error))
        return response
    reader = Reader(
        stream_id,
        response,
        request.transport,
        store,
        after,
        buffer_bytes=settings.conn_buffer_bytes,
        heartbeat_s=settings.heartbeat_s,
        stall_timeout_s=settings.stall_timeout_s,
    )
    metrics.streamer_open_connections.add(1)
    if after:
        metrics.streamer_resumes.add(1)
    try:
        await hub.attach(reader)
        reason = await reader.serve(StatusChange(status=meta.status))
    finally:
        metrics.streamer_open_connections.add(-1)
        await hub.detach(reader)
    if reason != "done":
        metrics.streamer_disconnects.add(1, {"reason": reason})
    return response


async def _hub(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
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
    return app
