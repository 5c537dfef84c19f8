"""NATS and Redis connections as every service opens them."""

from __future__ import annotations

import logging

import nats
import redis.asyncio as aioredis
from nats.aio.client import Client as NATS

from libs.common.settings import Settings

log = logging.getLogger(__name__)


async def connect_nats(settings: Settings, name: str) -> NATS:
    """Connect with reconnect forever: services ride out a NATS restart."""

    async def disconnected() -> None:
        log.warning("nats disconnected", extra={"service": name})

    async def reconnected() -> None:
        log.info("nats reconnected", extra={"service": name})

    async def error(exc: Exception) -> None:
        log.warning("nats error: %s", exc, extra={"service": name})

    return await nats.connect(
        settings.nats_url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        connect_timeout=2,
        allow_reconnect=True,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=error,
        pending_size=64 * 1024 * 1024,
    )


def connect_redis(settings: Settings) -> aioredis.Redis:
    """A pooled client; commands reconnect on their own after Redis restarts.

    The pool blocks when all its connections are busy: a burst of thousands of readers
    catching up at once waits its turn instead of failing with ``MaxConnectionsError``.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        decode_responses=False,
        socket_connect_timeout=2,
        socket_timeout=5,
        max_connections=512,
        timeout=5,
    )
    return aioredis.Redis(connection_pool=pool)
