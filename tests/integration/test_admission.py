"""Admission under overload: the bounded queue, its positions and maximum wait, tenant
limits, and runners that stop heartbeating. Each suite here is private (its own NATS and
Redis), so its small capacity is all there is.
"""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import msgspec
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from libs.client.http import Received, SluiceClient
from libs.common import names
from libs.tools.stack import Stack
from tests import conftest
from tests.integration.helpers import final, metric, read_stream, sim, tokens

SLOTS = 4
QUEUE_MAX = 4
QUEUE_WAIT_S = 3.0
TENANT_MAX = 2
ALIVE = "sluice_runners_alive"


def private_suite(
    tmp_path_factory: pytest.TempPathFactory, name: str, **env: str
) -> Iterator[Stack]:
    for suite in conftest.private_suite(tmp_path_factory, name, env):
        wait_for_runner(suite)
        yield suite


def wait_for_runner(stack: Stack, timeout_s: float = 10.0) -> None:
    """Until the coordinator has heard the runner: before that every slot looks taken."""
    deadline = time.monotonic() + timeout_s
    url = stack.first("coordinator").url + "/metrics"
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=2) as answer:
            families = text_string_to_metric_families(answer.read().decode())
            if any(s.value >= 1 for f in families for s in f.samples if s.name == ALIVE):
                return
        time.sleep(0.05)
    raise AssertionError("the coordinator never heard a runner")


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One runner of four slots and a queue of four."""
    yield from private_suite(
        tmp_path_factory,
        "crowded",
        SLUICE_RUNNER_SLOTS=str(SLOTS),
        SLUICE_QUEUE_MAX=str(QUEUE_MAX),
        SLUICE_QUEUE_WAIT_S=str(QUEUE_WAIT_S),
    )


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from private_suite(
        tmp_path_factory,
        "tenants",
        SLUICE_API_KEYS="k-alpha:alpha,k-beta:beta",
        SLUICE_TENANT_MAX_STREAMS=str(TENANT_MAX),
    )


async def create(client: SluiceClient, **body: Any) -> tuple[int, Any, dict[str, str]]:
    """POST /v1/streams, answering status, JSON body and headers whatever the status."""
    async with client.session.post(
        f"{client.gateway}/v1/streams",
        data=msgspec.json.encode({"prompt": "admission", **body}),
        headers={"Content-Type": "application/json", **client.headers},
    ) as response:
        return response.status, await response.json(), dict(response.headers)


def refused_properly(answer: tuple[int, Any, dict[str, str]], status: int, kind: str) -> None:
    code, body, headers = answer
    assert code == status, answer
    assert body["error"]["type"] == kind and body["error"]["message"], body
    assert int(headers["Retry-After"]) >= 1, headers


def positions(received: list[Received]) -> list[int]:
    return [r.json()["position"] for r in received if r.type == "status" and "position" in r.json()]


async def until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def runners_alive(session: aiohttp.ClientSession, stack: Stack) -> float:
    return await metric(session, stack.first("coordinator").url, ALIVE)


def all_alive(stack: Stack) -> None:
    for service in stack.services:
        assert service.process is not None and service.process.poll() is None, service.name


async def test_twice_the_capacity_queues_the_excess_with_positions_and_refuses_the_rest(
    crowded: Stack, session: aiohttp.ClientSession
) -> None:
    client = SluiceClient(session, crowded.gateway)
    body = {"sim": sim(tokens=30, tokens_per_s=30, ttft_ms=0)}
    answers = await asyncio.gather(*(create(client, **body) for _ in range(3 * SLOTS)))

    admitted = [a[1] for a in answers if a[0] == 201]
    refused = [a for a in answers if a[0] != 201]
    assert len(admitted) == SLOTS + QUEUE_MAX, [a[0] for a in answers]
    for answer in refused:
        refused_properly(answer, 503, "overloaded")
    assert sorted(a["position"] for a in admitted if a.get("position")) == [1, 2, 3, 4]

    streams = await asyncio.gather(*(read_stream(session, a["events_url"]) for a in admitted))
    for received in streams:
        assert final(received).type == "done", final(received)
        assert sum(t["n"] for t in tokens(received)) == 30
    queued = [positions(received) for received in streams if positions(received)]
    assert len(queued) == QUEUE_MAX, queued
    assert all(p == sorted(p, reverse=True) for p in queued), "positions only move forward"
    all_alive(crowded)


async def test_a_stream_queued_past_the_max_wait_fails_with_a_retryable_error(
    crowded: Stack, session: aiohttp.ClientSession
) -> None:
    client = SluiceClient(session, crowded.gateway)
    busy = [
        await client.create(prompt=f"busy {i}", sim=sim(tokens=200, tokens_per_s=10, ttft_ms=0))
        for i in range(SLOTS)
    ]
    try:
        waiting = await client.create(prompt="waits too long", sim=sim(tokens=5))
        started = time.monotonic()
        received = await read_stream(session, waiting["events_url"], timeout_s=10 * QUEUE_WAIT_S)
        waited = time.monotonic() - started
        error = final(received)
        assert error.type == "error", error
        assert error.json()["type"] == "overloaded" and error.json()["retryable"] is True
        assert QUEUE_WAIT_S - 1 <= waited <= 5 * QUEUE_WAIT_S, waited
        assert not tokens(received)
    finally:
        await asyncio.gather(*(client.cancel(b["id"]) for b in busy))


async def test_a_runner_that_stops_heartbeating_leaves_the_rotation_and_its_answers_move(
    crowded: Stack, session: aiohttp.ClientSession
) -> None:
    client = SluiceClient(session, crowded.gateway)
    frozen = crowded.add("runner", SLUICE_RUNNER_SLOTS=str(SLOTS))
    frozen.wait_ready()
    meta = aioredis.from_url(crowded.redis_url)
    try:
        await until(lambda: _equals(runners_alive(session, crowded), 2), 10, "two runners")
        body = {"prompt": "rotation", "sim": sim(tokens=40, tokens_per_s=20, ttft_ms=0)}
        created = [await client.create(**body) for _ in range(2 * SLOTS)]
        readers = [asyncio.create_task(read_stream(session, c["events_url"])) for c in created]

        async def placed() -> bool:
            ids = [await meta.hget(names.meta_key(c["id"]), "runner_id") for c in created]
            return all(ids)

        await until(placed, 10, "every stream placed")
        frozen.signal(signal.SIGSTOP)
        on_frozen = {
            c["id"]
            for c in created
            if (await meta.hget(names.meta_key(c["id"]), "runner_id")) == b"runner-%d" % frozen.port
        }
        assert len(on_frozen) == SLOTS, "least-loaded placement fills both runners"
        for c, received in zip(created, await asyncio.gather(*readers), strict=True):
            end = final(received)
            assert end.type == "done" and end.json()["tokens"] == 40, end
            moved = [
                r.json() for r in received if r.type == "status" and "continued_at" in r.json()
            ]
            assert len(moved) == (1 if c["id"] in on_frozen else 0), moved
        assert await runners_alive(session, crowded) == 1

        later = [await client.create(**body) for _ in range(SLOTS)]
        for c in later:
            assert final(await read_stream(session, c["events_url"])).type == "done"
            runner = await meta.hget(names.meta_key(c["id"]), "runner_id")
            assert runner != b"runner-%d" % frozen.port
        all_alive(crowded)
    finally:
        frozen.signal(signal.SIGCONT)
        frozen.stop()
        await meta.aclose()


async def _equals(value: Any, expected: float) -> bool:
    return bool(await value == expected)


async def test_a_tenant_past_its_limit_gets_429_and_others_are_unaffected(
    tenants: Stack, session: aiohttp.ClientSession
) -> None:
    alpha = SluiceClient(session, tenants.gateway, api_key="k-alpha")
    beta = SluiceClient(session, tenants.gateway, api_key="k-beta")
    long = {"prompt": "long", "sim": sim(tokens=500, tokens_per_s=10, ttft_ms=0)}
    held = [await alpha.create(**long) for _ in range(TENANT_MAX)]
    try:
        refused_properly(await create(alpha, **long), 429, "rate_limited")
        other = await beta.create(**long)
        await beta.cancel(other["id"])

        await alpha.cancel(held[0]["id"])
        await read_stream(session, held[0]["events_url"])
        code, body, _ = await create(alpha, sim=sim(tokens=3))
        assert code == 201, "a finished stream frees its place"
        assert final(await read_stream(session, body["events_url"])).type == "done"
    finally:
        await asyncio.gather(*(alpha.cancel(h["id"]) for h in held))
