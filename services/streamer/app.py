"""Streamer HTTP surface: the data plane, over SSE or a WebSocket per stream."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
from collections.abc import AsyncIterator

from aiohttp import web

from libs.common import sse
from libs.common.service import NATS_CLIENT, REDIS_CLIENT, SETTINGS, create_base_app
from libs.common.settings import Settings
from libs.common.store import stream_store
from libs.common.stream_control import StreamControl
from services.streamer import chat
from services.streamer.delivery import Opening, deliver, held, open_reading, reader_for
from services.streamer.frames import NATIVE_FRAMES
from services.streamer.hub import Hub
from services.streamer.keys import CONTROL, HUB, STORE
from services.streamer.reader import EXPIRED
from services.streamer.stream_socket import stream_socket


async def events(request: web.Request) -> web.StreamResponse:
    """``GET /v1/streams/{id}/events``: status at once, then tokens, then done."""
    opening = await open_reading(request)
    with held(request, opening):
        return await _respond(request, opening)


async def _respond(request: web.Request, opening: Opening) -> web.StreamResponse:
    response = web.StreamResponse(headers=sse.RESPONSE_HEADERS)
    await response.prepare(request)
    if opening.meta is None:
        error = {"type": EXPIRED.type, "message": EXPIRED.message, "retryable": False}
        await response.write(sse.RETRY + sse.json_frame("error", error))
        return response
    await deliver(request, reader_for(request, opening, response, NATIVE_FRAMES), opening.meta)
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
    await app[HUB].start()
    app[CONTROL] = StreamControl(settings, app[NATS_CLIENT], app[STORE])
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
    app.router.add_get("/v1/streams/{id}/ws", stream_socket)
    chat.add_routes(app)
    return app
