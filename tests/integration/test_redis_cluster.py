"""The log on a Redis Cluster of three masters and three replicas, killed a master at a time.

The suite runs with ``SLUICE_REDIS_CLUSTER`` and ``SLUICE_LOG_SYNC_REPLICAS=1``: every
commit waits until the master's replica holds it, so the replica a failover promotes
has every entry a reader was shown, and a resume after it returns exactly that text.
A promoted replica has no replica of its own until the dead node comes back (as its
replica), and commits wait until then: durability before availability, as decided.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from libs.client.http import SluiceClient
from libs.common import names
from libs.tools.clusters import RedisCluster, redis_cluster
from libs.tools.servers import nats_server
from libs.tools.stack import Stack
from tests.conftest import FAST_ENV
from tests.integration.resumable import Schedule, Transcript, expected_text, follow, wait_until
from tests.integration.test_faults import (
    assert_exact,
    followers,
    start_streams,
    wait_until_async,
)

SPREAD_STREAMS = 1_000
SHARE_RANGE = (0.20, 0.45)
FAILOVER_STREAMS, TOKENS, TOKENS_PER_S = 10, 300, 60


class ClusterSuite:
    def __init__(self, cluster: RedisCluster, stack: Stack) -> None:
        self.cluster, self.stack = cluster, stack


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSuite]:
    tmp: Path = tmp_path_factory.mktemp("redis-cluster")
    cluster = redis_cluster(tmp).start()
    nats = nats_server(workdir=tmp / "nats").start()
    env = {
        **FAST_ENV,
        "SLUICE_REDIS_CLUSTER": "1",
        "SLUICE_LOG_SYNC_REPLICAS": "1",
        "SLUICE_LOG_TTL_S": "600",
    }
    stack = Stack(nats.url, cluster.url, tmp, env=env)
    try:
        yield ClusterSuite(cluster, stack.start())
    finally:
        stack.stop()
        nats.stop()
        cluster.stop()


@pytest.fixture
async def client(suite: ClusterSuite) -> AsyncIterator[aioredis.RedisCluster]:
    first = suite.cluster.live()[0]
    redis = aioredis.RedisCluster(host="127.0.0.1", port=first.port)
    try:
        yield redis
    finally:
        await redis.aclose()


@pytest.fixture
def gateway(session: aiohttp.ClientSession, suite: ClusterSuite) -> SluiceClient:
    return SluiceClient(session, suite.stack.gateway)


async def master_port(redis: aioredis.RedisCluster, stream_id: str) -> int:
    await redis.initialize()
    node = redis.get_node_from_key(names.log_key(stream_id))
    assert node is not None, f"no master serves the slot of {stream_id}"
    return int(node.port)


async def test_a_stream_cut_twice_resumes_exactly_on_a_redis_cluster(
    suite: ClusterSuite, gateway: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await gateway.create(prompt="cluster cut", sim={"tokens": 200, "tokens_per_s": 400})
    transcript = await follow(
        session, [str(created["events_url"])], Schedule(cuts=[1200, 1200], pauses=[0.2, 0.2])
    )
    assert transcript.reconnect_reasons[:2] == ["cut", "cut"]
    assert_exact([transcript], ["cluster cut"], 200)


async def test_1000_streams_spread_over_the_three_masters(
    suite: ClusterSuite, gateway: SluiceClient, client: aioredis.RedisCluster
) -> None:
    limit = asyncio.Semaphore(50)

    async def create(index: int) -> str:
        async with limit:
            created = await gateway.create(prompt=f"spread {index}", sim={"tokens": 2})
            return str(created["id"])

    stream_ids = await asyncio.gather(*(create(i) for i in range(SPREAD_STREAMS)))
    shares = Counter([await master_port(client, stream_id) for stream_id in stream_ids])
    assert len(shares) == 3
    for count in shares.values():
        assert SHARE_RANGE[0] <= count / SPREAD_STREAMS <= SHARE_RANGE[1], shares
    for port, count in shares.items():
        await wait_until_async(
            functools.partial(logs_on, port, count),
            f"{count} logs written on master {port} itself",
            timeout_s=90,
        )


async def logs_on(port: int, count: int) -> bool:
    """Whether the node at ``port`` holds at least ``count`` stream logs."""
    node = aioredis.Redis(port=port)
    try:
        return len([k async for k in node.scan_iter(names.log_key("*"), count=1000)]) >= count
    finally:
        await node.aclose()


async def test_killing_a_master_mid_stream_loses_nothing_and_resume_returns_what_was_shown(
    suite: ClusterSuite,
    gateway: SluiceClient,
    session: aiohttp.ClientSession,
    client: aioredis.RedisCluster,
) -> None:
    created = await start_streams(gateway, FAILOVER_STREAMS, TOKENS, TOKENS_PER_S, "failover")
    streamers = [s for s in suite.stack.services if s.name == "streamer"]
    transcripts, done = followers(session, created, streamers, timeout_s=120)
    await wait_until(lambda: all(t.last_id >= 30 for t in transcripts), "30 tokens each")
    ports = Counter([await master_port(client, str(c["id"])) for c in created])
    victim_port = ports.most_common(1)[0][0]
    victim = next(node for node in suite.cluster.nodes if node.port == victim_port)
    victim.kill()
    await wait_until_async(
        lambda: asyncio.to_thread(lambda: len(suite.cluster.masters()) == 3),
        "a replica promoted in the dead master's place",
        timeout_s=30,
    )
    assert not done.done(), "commits wait for a replica: none is left on that shard"
    await asyncio.to_thread(victim.start)
    await asyncio.wait_for(done, 150)

    prompts = [f"failover {i}" for i in range(FAILOVER_STREAMS)]
    assert_exact(transcripts, prompts, TOKENS)
    longest = max(t.longest_stall_s for t in transcripts)
    print(f"\nkilled the master of {ports[victim_port]} streams: longest stall {longest:.2f}s")
    for stream, prompt in zip(created, prompts, strict=True):
        again = await follow(session, [str(stream["events_url"])], transcript=Transcript())
        assert again.text == expected_text(prompt, TOKENS), "resume after the failover"
    await asyncio.to_thread(suite.cluster.wait_ok, 30)
    assert victim_port not in [node.port for node in suite.cluster.masters()], "back as a replica"
