"""The dashboard's (and ``sluice top``'s) percentiles agree with what the streams' ``done`` said."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from libs.client import Client
from libs.tools.stack import Stack
from tests.conftest import FAST_ENV, own_servers

pytestmark = pytest.mark.timeout(180)
STREAMS = 30
BUCKET_WIDTH = 2 ** (1 / 8) - 1  # the histograms' relative bucket width


@pytest.fixture(scope="module")
async def quiet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """A suite of its own (NATS too), so the dashboard hears only this module's streams."""
    tmp = tmp_path_factory.mktemp("percentiles")
    with own_servers(tmp) as (nats, redis):
        suite = Stack(nats.url, f"{redis.url}/0", tmp, env=dict(FAST_ENV))
        await asyncio.to_thread(suite.start)
        try:
            yield suite
        finally:
            await asyncio.to_thread(suite.stop)


async def dashboard_when(
    session: aiohttp.ClientSession, stack: Stack, ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            async with session.get(stack.gateway + "/dashboard/stats") as answer:
                figures: dict[str, Any] = await answer.json()
            if ready(figures):
                return figures
            await asyncio.sleep(0.2)


async def test_ttft_and_queue_wait_percentiles_match_the_streams(
    quiet: Stack, session: aiohttp.ClientSession
) -> None:
    # The window counts from each instance's first snapshot: wait for every service's.
    await dashboard_when(session, quiet, lambda d: sum(d["instances"].values()) == 4)
    async with Client(quiet.gateway) as client:
        streams = [
            await client.create("how long", sim={"tokens": 3, "ttft_ms": 300 + 2 * i})
            for i in range(STREAMS)
        ]
        await asyncio.gather(*(stream.text() for stream in streams))
    ttfts = [stream.done.ttft_ms for stream in streams if stream.done and stream.done.ttft_ms]
    assert len(ttfts) == STREAMS
    figures = await dashboard_when(session, quiet, lambda d: d["ttft_ms"]["count"] >= STREAMS)
    exact = statistics.median(ttfts)
    assert abs(figures["ttft_ms"]["p50"] - exact) <= BUCKET_WIDTH * exact, (figures, exact)
    assert figures["queue_wait_ms"]["p50"] < 20, "no stream waited: not a bucket's midpoint"
