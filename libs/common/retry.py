"""Riding out outages of Redis and NATS: what counts as transient, and the retry loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import redis.exceptions

log = logging.getLogger(__name__)

TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    nats.errors.Error,
)
"""Outages, and a Redis Cluster's failover (``CLUSTERDOWN``, ``TRYAGAIN``, a slot whose
master is being replaced), which ends once a replica is promoted."""
BACKOFF_S = (0.05, 0.1, 0.25, 0.5, 1.0)

T = TypeVar("T")


async def retry_forever(action: Callable[[], Awaitable[T]], what: str, stream_id: str) -> T:
    """Run ``action`` until it succeeds, backing off between transient failures; its result."""
    attempt = 0
    while True:
        try:
            return await action()
        except TRANSIENT as exc:
            delay = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
            attempt += 1
            log.warning(
                "%s failed (%r); retry in %ss", what, exc, delay, extra={"stream_id": stream_id}
            )
            await asyncio.sleep(delay)
