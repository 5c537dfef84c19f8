"""Real NATS and Redis for the session, and the four services as real processes.

Servers start on free ports in a temp folder; where a Docker engine answers and
``SLUICE_TEST_CONTAINERS=1`` is set, testcontainers provides them instead. Tests
that kill or restart a server build their own with :func:`own_servers`, so faults
never leak into other tests.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from libs.client.http import SluiceClient
from libs.tools.servers import (
    Server,
    ServerError,
    binary_version,
    free_port,
    nats_server,
    redis_binary,
    redis_server,
)
from libs.tools.stack import SERVICES, Stack, page_origins
from tests.netcut import CuttableLink, LinkedStack


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


@contextmanager
def own_suite(tmp: Path, env: dict[str, str]) -> Iterator[Stack]:
    """A suite of its own (own NATS and Redis, the four services) with ``env`` over FAST_ENV."""
    with own_servers(tmp) as (nats, redis):
        suite = Stack(nats.url, f"{redis.url}/0", tmp, env={**FAST_ENV, **env})
        try:
            yield suite.start()
        finally:
            suite.stop()


def private_suite(
    tmp_path_factory: pytest.TempPathFactory, name: str, env: dict[str, str]
) -> Iterator[Stack]:
    """For a fixture: :func:`own_suite` in a fresh temporary directory named ``name``."""
    with own_suite(tmp_path_factory.mktemp(name), env) as suite:
        yield suite


@contextmanager
def stack_with_models(tmp: Path, models: dict[str, Any], **env: str) -> Iterator[Stack]:
    """A suite of its own whose runners serve ``models``."""
    with own_suite(tmp, {"SLUICE_MODELS": json.dumps(models), **env}) as suite:
        yield suite


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
    "SLUICE_SECRET": "test-secret-of-at-least-32-bytes-for-hmac",
    "SLUICE_HEARTBEAT_S": "1",
    "SLUICE_STALL_TIMEOUT_S": "3",
    "SLUICE_RUNNER_HEARTBEAT_S": "0.5",
    "SLUICE_RUNNER_DEAD_AFTER_S": "2",
    "SLUICE_DRAIN_TIMEOUT_S": "3",
    "SLUICE_LOG_LEVEL": "WARNING",
}


@pytest.fixture(scope="module")
async def linked(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LinkedStack]:
    """A suite of its own (NATS and Redis too) whose streamer clients reach through a link.

    A test can cut the link: a network loss. The chat page of its gateway reads SSE from
    the link's origin, as under ``sluice dev``.
    """
    tmp = tmp_path_factory.mktemp("linked-stack")
    ports = {name: free_port() for name in SERVICES}
    link = await CuttableLink(ports["streamer"]).start()
    env = {
        **FAST_ENV,
        "SLUICE_PUBLIC_STREAMER_URL": link.url,
        "SLUICE_CORS_ORIGINS": page_origins(ports["gateway"]),
    }
    with own_servers(tmp) as (nats, redis):
        suite = Stack(nats.url, f"{redis.url}/0", tmp, env=env)
        await asyncio.to_thread(suite.start, ports)
        try:
            yield LinkedStack(suite, link)
        finally:
            await asyncio.to_thread(suite.stop)
            await link.stop()


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
