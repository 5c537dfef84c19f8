"""Two suites in two namespaces on one NATS and one Redis never see each other.

Both suites share the session's servers (where the default-namespace suite runs too):
each serves only its own streams with its own runners, writes only keys under its
namespace, and its metrics and dashboard count only its own work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from libs.client.http import SluiceClient
from libs.common import names
from libs.tools.stack import SERVICES, Stack
from tests.conftest import FAST_ENV
from tests.integration.helpers import final, metric, read_stream, sim

NAMESPACES = ("alpha", "beta")
SETTLE_S = 30.0


@pytest.fixture(scope="module")
def suites(
    servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Stack]]:
    nats_url, redis_url = servers
    started: dict[str, Stack] = {}
    try:
        for namespace in NAMESPACES:
            env = {**FAST_ENV, names.NAMESPACE_VARIABLE: namespace}
            logdir = tmp_path_factory.mktemp(namespace)
            started[namespace] = Stack(nats_url, redis_url, logdir, env=env).start()
        yield started
    finally:
        for stack in started.values():
            stack.stop()


def runner_id(stack: Stack) -> str:
    return str(stack.first("runner").env["SLUICE_RUNNER_ID"])


async def complete(session: aiohttp.ClientSession, stack: Stack, tokens: int) -> str:
    created = await SluiceClient(session, stack.gateway).create(
        prompt="whose?", sim=sim(tokens=tokens)
    )
    received = await read_stream(session, created["events_url"])
    assert final(received).type == "done" and final(received).json()["tokens"] == tokens
    return str(created["id"])


async def dashboard_when(
    session: aiohttp.ClientSession, stack: Stack, ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async def poll() -> dict[str, Any]:
        while True:
            async with session.get(stack.gateway + "/dashboard/stats") as response:
                figures = dict(await response.json())
            if ready(figures):
                return figures
            await asyncio.sleep(0.2)

    return await asyncio.wait_for(poll(), SETTLE_S)


async def test_each_namespace_serves_its_own_streams_with_its_own_runner(
    suites: dict[str, Stack], session: aiohttp.ClientSession, redis: aioredis.Redis
) -> None:
    for namespace, stack in suites.items():
        stream_ids = [await complete(session, stack, tokens=12) for _ in range(5)]
        for stream_id in stream_ids:
            meta = names.in_namespace(names.meta_key(stream_id), namespace)
            assert await redis.hget(meta, "runner_id") == runner_id(stack).encode()
            assert not await redis.exists(names.meta_key(stream_id)), "nothing in the default"
            for other, elsewhere in suites.items():
                if other != namespace:
                    status, _ = await SluiceClient(session, elsewhere.gateway).get(stream_id)
                    assert status == 404, f"{namespace}'s stream is unknown to {other}"


async def test_keys_of_a_namespace_all_carry_its_prefix(
    suites: dict[str, Stack], session: aiohttp.ClientSession, redis: aioredis.Redis
) -> None:
    stream_id = await complete(session, suites["alpha"], tokens=8)
    keys = {key.decode() async for key in redis.scan_iter(f"*{stream_id}*", count=1000)}
    assert keys == {
        names.in_namespace(names.log_key(stream_id), "alpha"),
        names.in_namespace(names.meta_key(stream_id), "alpha"),
    }


async def test_metrics_and_dashboard_count_only_their_namespace(
    suites: dict[str, Stack], session: aiohttp.ClientSession
) -> None:
    alpha, beta = suites["alpha"], suites["beta"]

    async def tokens(stack: Stack) -> float:
        return await metric(session, stack.first("runner").url, "sluice_runner_tokens_total")

    before = {"alpha": await tokens(alpha), "beta": await tokens(beta)}
    for _ in range(3):
        await complete(session, alpha, tokens=10)
    assert await tokens(alpha) == before["alpha"] + 30
    assert await tokens(beta) == before["beta"], "alpha's streams ran on beta's runner"
    for namespace, stack in suites.items():
        figures = await dashboard_when(
            session,
            stack,
            lambda d: d["instances"] == {name: 1 for name in SERVICES},
        )
        assert figures["namespace"] == namespace
        assert figures["runners_alive"] == 1 and figures["slots_total"] == 256
