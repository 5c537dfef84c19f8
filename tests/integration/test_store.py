"""The Redis side of a stream against a real Redis: once-only ends and starts, idempotent appends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from libs.common.auth import new_stream_id
from libs.common.store import StreamMeta, StreamStore
from libs.common.wire import Done, Failed, TokenBatch, tokens_codec


@pytest.fixture
async def store(servers: tuple[str, str]) -> AsyncIterator[StreamStore]:
    client = aioredis.Redis.from_url(servers[1])
    yield StreamStore(client, ttl_s=60, maxlen=1000)
    await client.aclose()


def batch(first: int, count: int) -> tuple[TokenBatch, bytes]:
    tokens = TokenBatch(first=first, texts=[f" t{i}" for i in range(first, first + count)], ts=1)
    return tokens, tokens_codec.encode(tokens)


async def new_stream(store: StreamStore) -> str:
    stream_id = new_stream_id()
    await store.create(stream_id, StreamMeta(status="queued", tenant="t", model="sim"))
    return stream_id


async def test_a_retried_append_is_a_harmless_duplicate(store: StreamStore) -> None:
    stream_id = await new_stream(store)
    first, second = batch(1, 3), batch(4, 2)
    await store.append([(stream_id, *first)])
    await store.append([(stream_id, *first), (stream_id, *second)])
    entries = await store.read(stream_id, 0)
    assert [e.first for e in entries if isinstance(e, TokenBatch)] == [1, 4]
    assert await store.logged_tokens(stream_id) == 5
    after_two = await store.read(stream_id, 2)
    assert [e.first for e in after_two if isinstance(e, TokenBatch)] == [1, 4], "holds token 3"
    assert [e.first for e in await store.read(stream_id, 3) if isinstance(e, TokenBatch)] == [4]
    assert await store.read(stream_id, 5) == []


async def test_only_the_first_finaliser_ends_a_stream_and_nothing_follows_it(
    store: StreamStore,
) -> None:
    stream_id = await new_stream(store)
    await store.append([(stream_id, *batch(1, 2))])
    done = Done(finish_reason="stop", tokens=2)
    lost = Failed(type="runner_lost", message="gone", retryable=True)
    assert await store.finish(stream_id, done, tokens_codec.encode(done), status="completed")
    assert not await store.finish(stream_id, lost, tokens_codec.encode(lost), status="failed")
    await store.append([(stream_id, *batch(3, 1))])
    assert await store.logged_tokens(stream_id) == 2, "Redis refuses tokens after the end"
    entries = await store.read(stream_id, 0)
    assert entries[-1] == done
    meta = await store.meta(stream_id)
    assert meta is not None and meta.status == "completed"
    assert 0 < await store.redis.ttl(f"sluice:log:{stream_id}") <= 60


async def test_a_late_start_on_a_second_runner_does_not_generate_again(store: StreamStore) -> None:
    stream_id = await new_stream(store)
    assert await store.mark_running(stream_id, "runner-a") == ("", 0)
    assert await store.mark_running(stream_id, "runner-b") is None
    assert await store.mark_running(stream_id, "runner-a") == ("", 0)
    meta = await store.meta(stream_id)
    assert meta is not None and meta.runner_id == "runner-a"


async def test_a_start_after_the_end_or_with_a_recorded_cancel(store: StreamStore) -> None:
    ended = await new_stream(store)
    done = Done(finish_reason="cancelled", tokens=0)
    await store.finish(ended, done, tokens_codec.encode(done), status="cancelled")
    assert await store.mark_running(ended, "runner-a") is None
    cancelled = await new_stream(store)
    await store.update(cancelled, cancel_requested_ns=42, cancel_reason="superseded")
    assert await store.mark_running(cancelled, "runner-a") == ("superseded", 42)
