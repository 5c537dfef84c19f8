"""Real NATS and Redis for the session, and the four services as real processes.

Servers start on free ports in a temp folder; where a Docker engine answers and
``SLUICE_TEST_CONTAINERS=1`` is set, testcontainers provides them instead. Tests
that kill or restart a server build their own with :func:`own_servers`, so faults
never leak into other tests.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from libs.tools.client import SluiceClient
from libs.tools.servers import (
    Server,
    ServerError,
    binary_version,
    nats_server,
    redis_binary,
    redis_server,
)
from libs.tools.stack import Stack


def pytest_report_header() -> str:
    """Which Redis engine the session's servers run: the logs of CI's two runs say it."""
    try:
        binary = redis_binary()
    except ServerError as missing:
        return f"redis engine: none ({missing})"
    return f"redis engine: {binary} ({binary_version(binary)})"


@contextmanager
def containers() -> Iterator[tuple[str, str]]:
    from testcontainers.nats import NatsContainer
    from testcontainers.redis import RedisContainer

    with NatsContainer() as nats, RedisContainer() as redis:
        redis_url = f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(6379)}/0"
        yield nats.nats_uri(), redis_url


@contextmanager
def own_servers(tmp: Path, appendonly: bool = True) -> Iterator[tuple[Server, Server]]:
    """A NATS and a Redis that this test alone owns (and may kill)."""
    nats = nats_server(workdir=tmp / "nats").start()
    redis = redis_server(workdir=tmp / "redis", appendonly=appendonly).start()
    try:
        yield nats, redis
    finally:
        nats.stop()
        redis.stop()


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    if os.environ.get("SLUICE_TEST_CONTAINERS") == "1":
        with containers() as urls:
            yield urls
        return
    with own_servers(tmp_path_factory.mktemp("servers")) as (nats, redis):
        yield nats.url, f"{redis.url}/0"


@pytest.fixture(scope="session")
def stack(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The shared suite: four services with fast timings for tests."""
    nats_url, redis_url = servers
    logdir = tmp_path_factory.mktemp("stack")
    suite = Stack(nats_url, redis_url, logdir, env=dict(FAST_ENV))
    try:
        yield suite.start()
    finally:
        suite.stop()


FAST_ENV = {
    "SLUICE_SECRET": "test-secret",
    "SLUICE_HEARTBEAT_S": "1",
    "SLUICE_STALL_TIMEOUT_S": "3",
    "SLUICE_RUNNER_HEARTBEAT_S": "0.5",
    "SLUICE_RUNNER_DEAD_AFTER_S": "2",
    "SLUICE_DRAIN_TIMEOUT_S": "3",
    "SLUICE_LOG_LEVEL": "WARNING",
}


@pytest.fixture
async def redis(servers: tuple[str, str]) -> AsyncIterator[aioredis.Redis]:
    """A client of the session's Redis, for tests that look at keys themselves."""
    client = aioredis.Redis.from_url(servers[1])
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as client_session:
        yield client_session


@pytest.fixture
def client(session: aiohttp.ClientSession, stack: Stack) -> SluiceClient:
    return SluiceClient(session, stack.gateway)
