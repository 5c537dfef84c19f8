"""``SLUICE_LOG_SYNC_REPLICAS`` on one Redis with a replica: a commit is done only once
the replica holds it, and without a replica it fails as not replicated (and is retried)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from libs.common.auth import new_stream_id
from libs.common.retry import TRANSIENT
from libs.common.store import LogNotReplicated, StreamStore
from libs.common.wire import Done, TokenBatch, tokens_codec
from libs.tools.servers import Server, redis_server
from tests.integration.test_faults import wait_until_async

SYNC_TIMEOUT_MS = 200


@pytest.fixture(scope="module")
def primary_and_replica(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, Server]]:
    tmp: Path = tmp_path_factory.mktemp("log-sync")
    primary = redis_server(workdir=tmp / "primary").start()
    replica = redis_server(workdir=tmp / "replica")
    replica.argv += ["--replicaof", "127.0.0.1", str(primary.port)]
    replica.argv += ["--repl-diskless-sync-delay", "0"]
    replica.start()
    try:
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


async def replicating(primary: Server) -> bool:
    async with aioredis.Redis(port=primary.port) as client:
        info = await client.info("replication")
    return "online" in str(info.get("slave0", {}))


@pytest.fixture
async def clients(
    primary_and_replica: tuple[Server, Server],
) -> AsyncIterator[tuple[aioredis.Redis, aioredis.Redis]]:
    primary, replica = primary_and_replica
    async with aioredis.Redis(port=primary.port) as p, aioredis.Redis(port=replica.port) as r:
        yield p, r


def one_batch() -> tuple[TokenBatch, bytes]:
    tokens = TokenBatch(first=1, texts=[" a", " b"], ts=1)
    return tokens, tokens_codec.encode(tokens)


async def test_a_commit_returns_once_the_replica_holds_it(
    clients: tuple[aioredis.Redis, aioredis.Redis], primary_and_replica: tuple[Server, Server]
) -> None:
    primary, replica = clients
    store = StreamStore(primary, 60, 1000, sync_replicas=1, sync_timeout_ms=SYNC_TIMEOUT_MS)
    replica_store = StreamStore(replica, 60, 1000)
    await wait_until_async(lambda: replicating(primary_and_replica[0]), "replica online")
    stream_id = ""
    for _ in range(20):
        stream_id = new_stream_id()
        await store.append([(stream_id, *one_batch(), 0)])
        assert await replica_store.logged_tokens(stream_id) == 2, "the replica has it already"
    done = Done(finish_reason="stop", tokens=2)
    assert await store.finish(stream_id, done, tokens_codec.encode(done), status="completed")
    assert len(await replica_store.read(stream_id, 0)) == 2, "and the end"


async def test_a_commit_no_replica_acknowledges_fails_as_transient(
    clients: tuple[aioredis.Redis, aioredis.Redis],
) -> None:
    primary, _ = clients
    store = StreamStore(primary, 60, 1000, sync_replicas=2, sync_timeout_ms=SYNC_TIMEOUT_MS)
    with pytest.raises(LogNotReplicated, match="1 of 2 replicas within 200 ms") as raised:
        await store.append([(new_stream_id(), *one_batch(), 0)])
    assert isinstance(raised.value, TRANSIENT), "the log writer retries it"
