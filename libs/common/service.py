"""The base every service stands on: connections, health, metrics, clean shutdown.

A service module builds its app with :func:`create_base_app`, adds its routes and
cleanup contexts, and hands it to :func:`run`, which serves until SIGTERM and then
shuts down gracefully (``on_shutdown`` first, then connections drain and close).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator

import prometheus_client
from aiohttp import web

from libs.common.connections import RedisClient, connect_nats, connect_redis
from libs.common.cors import Cors
from libs.common.direct_nats import DirectNATS
from libs.common.http import LIMITS, error_middleware, json_response
from libs.common.keys import key_ring
from libs.common.limits import TenantLimits
from libs.common.logs import setup_logging
from libs.common.operator import operator_middleware
from libs.common.process import prepare_process
from libs.common.settings import Settings, check_deployment
from libs.common.stats import StatsPublisher
from libs.common.telemetry import setup_telemetry

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
NATS_CLIENT = web.AppKey("nats", DirectNATS)
REDIS_CLIENT: web.AppKey[RedisClient] = web.AppKey("redis")
SERVICE_NAME = web.AppKey("service_name", str)


async def _connections(app: web.Application) -> AsyncIterator[None]:
    settings, name = app[SETTINGS], app[SERVICE_NAME]
    app[REDIS_CLIENT] = connect_redis(settings)
    app[NATS_CLIENT] = await connect_nats(settings, name)
    stats = StatsPublisher(app[NATS_CLIENT], name)
    if settings.telemetry:
        stats.start()
    yield
    await stats.stop()
    try:
        await asyncio.wait_for(app[NATS_CLIENT].drain(), timeout=5)
    except (TimeoutError, Exception) as exc:  # drain failing must not block the exit
        log.warning("nats drain failed: %s", exc)
    await app[REDIS_CLIENT].aclose()


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "service": request.app[SERVICE_NAME]})


# How long /readyz waits on Redis; the Kubernetes readiness probes' timeouts exceed it.
READY_REDIS_TIMEOUT_S = 1.0


async def readyz(request: web.Request) -> web.Response:
    """Ready when both NATS and Redis answer; 503 otherwise, naming what failed."""
    checks = {"nats": request.app[NATS_CLIENT].is_connected, "redis": False}
    try:
        checks["redis"] = bool(
            await asyncio.wait_for(request.app[REDIS_CLIENT].ping(), READY_REDIS_TIMEOUT_S)
        )
    except Exception as exc:
        log.warning("redis not ready: %s", exc)
    ready = all(checks.values())
    return json_response({"ready": ready, **checks}, status=200 if ready else 503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = prometheus_client.generate_latest(prometheus_client.REGISTRY)
    return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})


def create_base_app(settings: Settings, service: str) -> web.Application:
    """An app with the error middleware, health routes and NATS/Redis opened for its life."""
    setup_logging(service, settings.log_level)
    setup_telemetry(service, settings.telemetry)
    check_deployment(settings)
    if not key_ring(settings.api_keys, settings.api_keys_file).digests:
        log.warning("SLUICE_API_KEYS is empty: authentication is off, every call is 'anonymous'")
    if not settings.secret:
        log.warning("SLUICE_SECRET is unset: read tokens use a development key")
    app = web.Application(
        middlewares=[error_middleware(service), operator_middleware(settings)],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[SERVICE_NAME] = service
    app[LIMITS] = TenantLimits(settings)
    Cors(settings.cors_origins).install(app)
    app.cleanup_ctx.append(_connections)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


LISTEN_BACKLOG = 4096
"""Connections the kernel may queue before a service accepts them (capped by somaxconn).

aiohttp's default of 128 overflowed while 200 clients a second connected to a busy
streamer: the kernel dropped their handshakes and each client waited out TCP's
retransmit timer (1 s, then 3 s, then 7 s) before its first event. A streamer restart,
when every one of its readers reconnects at once, is the same burst.
"""


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)


def run(app: web.Application, port: int) -> None:
    """Serve until SIGTERM/SIGINT (on uvloop, see :func:`prepare_process`), on ``port`` and,
    when one is set, on the admin port (see :mod:`libs.common.operator`)."""
    prepare_process()
    settings = app[SETTINGS]
    ports = [port, settings.admin_port] if settings.admin_port else [port]
    web.run_app(
        app,
        sock=[_listen(settings.host, each) for each in ports],
        access_log=None,
        print=None,
        shutdown_timeout=settings.drain_timeout_s,
        handle_signals=True,
        backlog=LISTEN_BACKLOG,
    )
