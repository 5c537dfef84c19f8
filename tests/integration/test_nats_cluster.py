"""On a 3-node NATS cluster, losing the node a runner and a streamer use loses nothing.

The suite is given all three nodes in ``SLUICE_NATS_URL``. The test asks the nodes'
monitoring which ones hold the runner's and the streamer's connections, SIGKILLs
them mid-stream, and checks that every stream still reads exactly the sim model's
text; it reports the longest wait any reader had between two tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from libs.client.http import SluiceClient
from libs.tools.clusters import NatsCluster, nats_cluster
from libs.tools.servers import redis_server
from libs.tools.stack import Stack
from tests.conftest import FAST_ENV
from tests.integration.resumable import wait_until
from tests.integration.test_faults import assert_exact, followers, start_streams

STREAMS, TOKENS, TOKENS_PER_S = 20, 300, 60
STALL_BOUND_S = 15.0
"""An order of magnitude above what a reconnect takes; the figure itself is printed."""


@pytest.fixture(scope="module")
def cluster_suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NatsCluster, Stack]]:
    tmp: Path = tmp_path_factory.mktemp("nats-cluster")
    cluster = nats_cluster(tmp).start()
    redis = redis_server(workdir=tmp / "redis").start()
    stack = Stack(cluster.url, f"{redis.url}/0", tmp, env=dict(FAST_ENV))
    try:
        yield cluster, stack.start()
    finally:
        stack.stop()
        redis.stop()
        cluster.stop()


async def test_every_service_connects_through_the_cluster_url(
    cluster_suite: tuple[NatsCluster, Stack],
) -> None:
    cluster, _ = cluster_suite
    assert len(cluster.url.split(",")) == 3
    for name in ("gateway", "coordinator", "runner", "streamer"):
        assert len(cluster.serving(name)) == 1, f"{name} holds one connection"


async def test_killing_the_runners_and_streamers_node_mid_stream_loses_nothing(
    cluster_suite: tuple[NatsCluster, Stack], session: aiohttp.ClientSession
) -> None:
    cluster, stack = cluster_suite
    gateway = SluiceClient(session, stack.gateway)
    created = await start_streams(gateway, STREAMS, TOKENS, TOKENS_PER_S, "nats node")
    streamers = [s for s in stack.services if s.name == "streamer"]
    transcripts, done = followers(session, created, streamers)
    await wait_until(lambda: all(t.last_id >= 30 for t in transcripts), "30 tokens each")

    victims = {id(n): n for n in cluster.serving("runner") + cluster.serving("streamer")}
    for node in victims.values():
        node.server.kill()
    await asyncio.wait_for(done, 90)

    assert_exact(transcripts, [f"nats node {i}" for i in range(STREAMS)], TOKENS)
    longest = max(t.longest_stall_s for t in transcripts)
    print(f"\nkilled {len(victims)} of 3 NATS nodes: readers' longest stall {longest:.2f}s")
    assert longest < STALL_BOUND_S
    for name in ("runner", "streamer"):
        log = stack.first(name).log_path.read_text()
        assert "nats disconnected" in log, f"the {name} lost its node"
    survivors = [n for n in cluster.nodes if n.alive()]
    assert cluster.serving("runner") and cluster.serving("runner")[0] in survivors
    assert cluster.serving("streamer") and cluster.serving("streamer")[0] in survivors
