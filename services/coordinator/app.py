"""Coordinator HTTP surface: only health and metrics; the work arrives over NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from libs.common.service import NATS_CLIENT, REDIS_CLIENT, SETTINGS, create_base_app
from libs.common.settings import Settings
from libs.common.store import stream_store
from services.coordinator.coordinator import Coordinator

COORDINATOR = web.AppKey("coordinator", Coordinator)


async def _coordinator(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = stream_store(app[REDIS_CLIENT], settings)
    coordinator = Coordinator(settings, app[NATS_CLIENT], store)
    app[COORDINATOR] = coordinator
    await coordinator.start()
    yield
    await coordinator.stop()


def create_app(settings: Settings) -> web.Application:
    app = create_base_app(settings, "coordinator")
    app.cleanup_ctx.append(_coordinator)
    return app
