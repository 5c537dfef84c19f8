"""One tenant cannot starve another: capped running streams, fair order, bounded duration."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest

from libs.client.http import SluiceClient
from libs.tools.stack import Stack
from tests.conftest import private_suite
from tests.integration.helpers import final, read_stream, sim

SLOTS = 8
MAX_STREAM_S = 8


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One small runner shared by two tenants."""
    env = {
        "SLUICE_API_KEYS": "key-a:alice,key-b:bob",
        "SLUICE_RUNNER_SLOTS": str(SLOTS),
        "SLUICE_MAX_STREAM_S": str(MAX_STREAM_S),
    }
    yield from private_suite(tmp_path_factory, "fair", env)


async def until_status(client: SluiceClient, stream_id: str, wanted: str) -> dict[str, object]:
    for _ in range(200):
        _, info = await client.get(stream_id)
        if info["status"] == wanted:
            return dict(info)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{stream_id} never became {wanted}: {info}")


async def test_a_tenant_hoarding_slow_unread_streams_does_not_delay_another(
    shared: Stack, session: aiohttp.ClientSession
) -> None:
    alice = SluiceClient(session, shared.gateway, api_key="key-a")
    bob = SluiceClient(session, shared.gateway, api_key="key-b")
    slow = sim(tokens=10_000, tokens_per_s=0.5)
    hoard = [
        await alice.create(prompt=f"hoard {i}", sim=slow, abandon_after_s=None)
        for i in range(2 * SLOTS)
    ]
    await until_status(alice, hoard[SLOTS // 2 - 1]["id"], "running")
    for index in range(3):
        created = await bob.create(prompt=f"bob {index}", sim=sim(tokens=5))
        received = await read_stream(session, created["events_url"])
        assert final(received).type == "done"
        _, info = await bob.get(created["id"])
        assert info["status"] == "completed"
        assert info["started_at"] - info["created_at"] < 1.0, info
    statuses = [(await alice.get(h["id"]))[1]["status"] for h in hoard]
    assert statuses.count("running") == SLOTS // 2, statuses
    for stream in hoard:
        await alice.cancel(stream["id"])


async def test_a_generation_ends_after_the_maximum_stream_duration(
    shared: Stack, session: aiohttp.ClientSession
) -> None:
    alice = SluiceClient(session, shared.gateway, api_key="key-a")
    created = await alice.create(
        prompt="forever", sim=sim(tokens=100_000, tokens_per_s=2), abandon_after_s=None
    )
    received = await read_stream(session, created["events_url"], timeout_s=MAX_STREAM_S * 4)
    assert final(received).type == "done" and final(received).json()["finish_reason"] == "length"
    _, info = await alice.get(created["id"])
    assert info["status"] == "completed"
    assert MAX_STREAM_S <= info["duration_ms"] / 1000 < MAX_STREAM_S * 2
