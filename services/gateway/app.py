"""Gateway HTTP surface: create, inspect and cancel streams; the control WebSocket; the chat page."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from libs.common.api import decode_request
from libs.common.control_frames import HARD_FRAME_BYTES
from libs.common.http import LIMITS, json_response, read_body, request_tenant
from libs.common.service import NATS_CLIENT, REDIS_CLIENT, SETTINGS, create_base_app
from libs.common.settings import Settings
from libs.common.store import stream_store
from services.gateway import dashboard, ui
from services.gateway.control_socket import ControlSession
from services.gateway.streams import Streams

STREAMS = web.AppKey("streams", Streams)


async def create_stream(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    tenant = request_tenant(request, settings)
    body = decode_request(await read_body(request, settings.max_body_bytes))
    created = await request.app[STREAMS].create(tenant, body)
    return json_response(created, status=201)


async def get_stream(request: web.Request) -> web.Response:
    tenant = request_tenant(request, request.app[SETTINGS])
    return json_response(await request.app[STREAMS].info(tenant, request.match_info["id"]))


async def cancel_stream(request: web.Request) -> web.Response:
    tenant = request_tenant(request, request.app[SETTINGS])
    stream_id = request.match_info["id"]
    meta = await request.app[STREAMS].cancel(tenant, stream_id)
    return json_response(
        {"id": stream_id, "status": meta.status, "cancel": "requested"}, status=202
    )


async def control(request: web.Request) -> web.WebSocketResponse:
    settings, limits = request.app[SETTINGS], request.app[LIMITS]
    tenant = request_tenant(request, settings, query_key=True)
    with limits.connection("WebSockets", tenant, settings.tenant_max_sockets):
        ws = web.WebSocketResponse(heartbeat=20, max_msg_size=HARD_FRAME_BYTES)
        await ws.prepare(request)
        streams, nc = request.app[STREAMS], request.app[NATS_CLIENT]
        await ControlSession(ws, streams, nc, tenant, limits).run()
    return ws


async def _streams(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = stream_store(app[REDIS_CLIENT], settings)
    app[STREAMS] = Streams(settings, app[NATS_CLIENT], store)
    yield


def create_app(settings: Settings) -> web.Application:
    app = create_base_app(settings, "gateway")
    app.cleanup_ctx.append(_streams)
    app.router.add_post("/v1/streams", create_stream)
    app.router.add_get("/v1/streams/{id}", get_stream)
    app.router.add_post("/v1/streams/{id}/cancel", cancel_stream)
    app.router.add_get("/v1/control", control)
    dashboard.add_routes(app)
    ui.add_routes(app)
    return app
