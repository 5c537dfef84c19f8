"""Per-tenant rate and connection limits, so one tenant's burst is its own problem.

Requests and WebSocket frames draw from one token bucket per tenant (all of a
tenant's sockets share it, so opening more sockets buys no more frames); open
WebSockets and SSE streams are counted per tenant. The limits hold per process (per
gateway or streamer replica). With authentication off every caller is the one tenant
``anonymous``: the suite-wide bounds (queue, connections) apply and these do not.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from libs.common.errors import RateLimited
from libs.common.settings import Settings


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def wait_s(self) -> float:
        """How long until the next token."""
        return max(0.0, (1 - self.tokens) / self.rate)


class TenantLimits:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.enabled = settings.auth_enabled
        self._requests: dict[str, TokenBucket] = {}
        self._frames: dict[str, TokenBucket] = {}
        self._open: Counter[tuple[str, str]] = Counter()

    def request(self, tenant: str) -> None:
        """Count one request against the tenant's rate; 429 with Retry-After past it."""
        rate, burst = self._settings.tenant_requests_per_s, self._settings.tenant_request_burst
        self._draw(self._requests, tenant, rate, burst, "requests")

    def frame(self, tenant: str) -> None:
        """Count one WebSocket frame against the tenant's rate, over all its sockets."""
        rate, burst = self._settings.tenant_frames_per_s, self._settings.tenant_frame_burst
        self._draw(self._frames, tenant, rate, burst, "WebSocket frames")

    def _draw(
        self, buckets: dict[str, TokenBucket], tenant: str, rate: float, burst: int, what: str
    ) -> None:
        if not self.enabled:
            return
        bucket = buckets.get(tenant)
        if bucket is None:
            bucket = buckets[tenant] = TokenBucket(rate, burst)
        if not bucket.take():
            raise RateLimited(
                f"more than {rate:g} {what}/s for this tenant", retry_after_s=bucket.wait_s()
            )

    @contextmanager
    def connection(self, kind: str, tenant: str, cap: int) -> Iterator[None]:
        """Hold one of the tenant's ``cap`` open connections of ``kind`` while inside."""
        key = (kind, tenant)
        if self.enabled and self._open[key] >= cap:
            raise RateLimited(f"this tenant holds its {cap} open {kind}", retry_after_s=1)
        self._open[key] += 1
        try:
            yield
        finally:
            self._open[key] -= 1
            if not self._open[key]:
                del self._open[key]
