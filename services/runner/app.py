"""Runner HTTP surface: only health and metrics; the work arrives over NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from libs.common.service import NATS_CLIENT, REDIS_CLIENT, SETTINGS, create_base_app
from libs.common.settings import Settings
from libs.common.store import stream_store
from services.runner.backends import Backend
from services.runner.backends.sim import SimBackend
from services.runner.runner import Runner

RUNNER = web.AppKey("runner", Runner)


def build_backends(settings: Settings) -> dict[str, Backend]:
    """``sim`` always; every ``SLUICE_MODELS`` entry by its backend kind."""
    backends: dict[str, Backend] = {"sim": SimBackend()}
    for name, spec in settings.models.items():
        if spec.backend == "sim":
            backends[name] = SimBackend()
        else:
            from services.runner.backends.openai import OpenAIBackend

            backends[name] = OpenAIBackend(spec)
    return backends


async def _runner(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = stream_store(app[REDIS_CLIENT], settings)
    backends = build_backends(settings)
    runner = Runner(settings, app[NATS_CLIENT], store, backends)
    app[RUNNER] = runner
    await runner.start()
    yield
    await runner.stop(settings.drain_timeout_s)
    for backend in backends.values():
        await backend.close()


def create_app(settings: Settings) -> web.Application:
    app = create_base_app(settings, "runner")
    app.cleanup_ctx.append(_runner)
    return app
