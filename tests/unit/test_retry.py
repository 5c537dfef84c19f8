"""Backoff doubles up to its cap and spreads retries that fail together."""

from __future__ import annotations

import asyncio

import pytest

from libs.common.retry import Backoff, retry_forever


def test_each_delay_lies_in_the_upper_half_of_a_doubling_capped_ceiling() -> None:
    for _ in range(200):
        backoff = Backoff(first_s=0.1, cap_s=1.0)
        delays = [backoff.next_s() for _ in range(7)]
        for delay, ceiling in zip(delays, (0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0), strict=True):
            assert ceiling / 2 <= delay <= ceiling


def test_streams_that_fail_together_do_not_retry_together() -> None:
    first_delays = {Backoff(first_s=0.1, cap_s=1.0).next_s() for _ in range(100)}
    assert len(first_delays) > 50


async def test_retry_forever_retries_transient_failures_and_returns_the_result() -> None:
    failures = [ConnectionResetError("redis restarting"), TimeoutError()]

    async def action() -> str:
        if failures:
            raise failures.pop(0)
        return "read"

    assert await asyncio.wait_for(retry_forever(action, "log read", "st_x"), 5) == "read"


async def test_retry_forever_lets_other_errors_through() -> None:
    async def action() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        await retry_forever(action, "log read", "st_x")
