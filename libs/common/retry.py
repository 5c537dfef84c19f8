"""Riding out outages: what counts as transient, the backoff between tries, the retry loop."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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

T = TypeVar("T")


@dataclass(slots=True)
class Backoff:
    """Delays that double from ``first_s`` up to ``cap_s``, each drawn from its upper half.

    The jitter spreads out the many streams that fail together (Redis restarts under a
    thousand of them), so they do not all come back in the same instant; keeping the
    lower half out keeps a retry from following its failure at once.
    """

    first_s: float
    cap_s: float
    attempt: int = 0

    def next_s(self) -> float:
        """The delay before the next try."""
        ceiling = min(self.cap_s, self.first_s * 2**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)


async def retry_forever(action: Callable[[], Awaitable[T]], what: str, stream_id: str) -> T:
    """Run ``action`` until it succeeds, backing off between transient failures; its result."""
    backoff = Backoff(first_s=0.05, cap_s=1.0)
    while True:
        try:
            return await action()
        except TRANSIENT as exc:
            delay = backoff.next_s()
            log.warning(
                "%s failed (%r); retry in %.2fs",
                what,
                exc,
                delay,
                extra={"stream_id": stream_id},
            )
            await asyncio.sleep(delay)
