"""The Redis side of a stream against a real Redis: atomic admission, once-only ends and
starts, idempotent appends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from libs.common import names
from libs.common.auth import new_stream_id
from libs.common.store import Admission, Claim, Feedback, StreamMeta, StreamStore
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
    await store.admit(stream_id, StreamMeta(status="queued", tenant="t", model="sim"), limit=10**6)
    return stream_id


async def test_a_retried_append_is_a_harmless_duplicate(store: StreamStore) -> None:
    stream_id = await new_stream(store)
    first, second = batch(1, 3), batch(4, 2)
    await store.append([(stream_id, *first, 0)])
    await store.append([(stream_id, *first, 0), (stream_id, *second, 0)])
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
    await store.append([(stream_id, *batch(1, 2), 0)])
    done = Done(finish_reason="stop", tokens=2)
    lost = Failed(type="runner_lost", message="gone", retryable=True)
    assert await store.finish(stream_id, done, tokens_codec.encode(done), status="completed")
    assert not await store.finish(stream_id, lost, tokens_codec.encode(lost), status="failed")
    await store.append([(stream_id, *batch(3, 1), 0)])
    assert await store.logged_tokens(stream_id) == 2, "Redis refuses tokens after the end"
    entries = await store.read(stream_id, 0)
    assert entries[-1] == done
    meta = await store.meta(stream_id)
    assert meta is not None and meta.status == "completed"
    assert 0 < await store.redis.ttl(names.log_key(stream_id)) <= 60


async def test_a_late_start_on_a_second_runner_does_not_generate_again(store: StreamStore) -> None:
    stream_id = await new_stream(store)
    claim = await store.mark_running(stream_id, "runner-a")
    assert claim is not None and claim.started_ns > 0 and claim.logged == 0
    assert await store.mark_running(stream_id, "runner-b") is None
    assert await store.mark_running(stream_id, "runner-a") == claim, "started once"
    meta = await store.meta(stream_id)
    assert meta is not None and meta.runner_id == "runner-a"


async def test_a_start_after_the_end_or_with_a_recorded_cancel(store: StreamStore) -> None:
    ended = await new_stream(store)
    done = Done(finish_reason="cancelled", tokens=0)
    await store.finish(ended, done, tokens_codec.encode(done), status="cancelled")
    assert await store.mark_running(ended, "runner-a") is None
    cancelled = await new_stream(store)
    await store.update(cancelled, cancel_requested_ns=42, cancel_reason="superseded")
    claim = await store.mark_running(cancelled, "runner-a")
    assert claim is not None and (claim.cancel_reason, claim.cancel_requested_ns) == (
        "superseded",
        42,
    )


async def test_a_moved_stream_refuses_every_write_and_the_end_of_the_attempt_before(
    store: StreamStore,
) -> None:
    stream_id = await new_stream(store)
    first = await store.mark_running(stream_id, "runner-a")
    assert first is not None and first.logged == 0
    assert await store.append([(stream_id, *batch(1, 2), 0)]) == set()
    assert await store.move(stream_id, "runner-a", "runner-b") == 1
    assert await store.move(stream_id, "runner-a", "runner-c") is None, "moved once only"
    assert await store.append([(stream_id, *batch(3, 2), 0)]) == {stream_id}
    done = Done(finish_reason="stop", tokens=4)
    assert not await store.finish(stream_id, done, tokens_codec.encode(done), 0)
    assert await store.mark_running(stream_id, "runner-a", 0) is None, "a stale start loses"
    claim = await store.mark_running(stream_id, "runner-b", 1, regenerates=True)
    assert claim == Claim(logged=2, handoffs=[2], recomputed=2, started_ns=first.started_ns)
    assert await store.append([(stream_id, *batch(3, 1), 1)]) == set()
    batches = await store.logged_batches(stream_id)
    assert "".join(text for batch in batches for text in batch.texts) == " t1 t2 t3"
    assert await store.finish(stream_id, done, tokens_codec.encode(done), 1, status="completed")


def queued(tenant: str, conversation_id: str = "") -> StreamMeta:
    return StreamMeta(tenant=tenant, model="sim", conversation_id=conversation_id, created_ns=7)


async def test_admitting_under_the_limit_writes_meta_and_takes_a_place(store: StreamStore) -> None:
    tenant, stream_id = new_stream_id(), new_stream_id()
    admission = await store.admit(stream_id, queued(tenant), limit=2)
    assert admission == Admission(admitted=True, active=1, previous=None)
    assert await store.meta(stream_id) == queued(tenant)
    assert 60 * 23 < await store.redis.ttl(names.meta_key(stream_id)) <= 60 * 24
    assert await store.redis.smembers(names.tenant_active_key(tenant)) == {stream_id.encode()}
    assert not [key async for key in store.redis.scan_iter(names.conversation_key(tenant, "*"))]


async def test_a_refusal_at_the_limit_changes_nothing(store: StreamStore) -> None:
    tenant, held, refused = new_stream_id(), new_stream_id(), new_stream_id()
    assert (await store.admit(held, queued(tenant, "c"), limit=1)).admitted
    admission = await store.admit(refused, queued(tenant, "c"), limit=1)
    assert admission == Admission(admitted=False, active=1, previous=None)
    assert await store.redis.smembers(names.tenant_active_key(tenant)) == {held.encode()}
    assert not await store.redis.exists(names.meta_key(refused))
    assert await store.redis.get(names.conversation_key(tenant, "c")) == held.encode()


async def test_admitting_swaps_the_conversations_stream(store: StreamStore) -> None:
    tenant, first, second = new_stream_id(), new_stream_id(), new_stream_id()
    assert (await store.admit(first, queued(tenant, "c"), limit=5)).previous is None
    admission = await store.admit(second, queued(tenant, "c"), limit=5)
    assert admission == Admission(admitted=True, active=2, previous=first)
    key = names.conversation_key(tenant, "c")
    assert await store.redis.get(key) == second.encode()
    assert 0 < await store.redis.ttl(key) <= 60


async def test_the_feedback_stream_is_capped(store: StreamStore) -> None:
    """Ratings are trimmed as they come (roughly: Redis trims whole nodes of 100 entries)."""
    await store.redis.delete(names.FEEDBACK_STREAM)
    for rating in range(1_000):
        feedback = Feedback("t", "st_x", rating % 2, "", ts=rating)
        await store.record_feedback(feedback, maxlen=50)
    length = await store.redis.xlen(names.FEEDBACK_STREAM)
    assert 50 <= length <= 150
    ((_, last),) = await store.redis.xrevrange(names.FEEDBACK_STREAM, count=1) or []
    assert last is not None and last[b"ts"] == b"999"  # the newest are kept


async def test_a_misspelt_meta_field_is_refused_and_writes_nothing(store: StreamStore) -> None:
    """mypy refuses these calls too (hence the ignores); this is the run-time half."""
    stream_id = await new_stream(store)
    before = await store.redis.hgetall(names.meta_key(stream_id))
    misspelt = {"cancel_reason": "cancelled", "cancel_requsted_ns": 42}
    with pytest.raises(TypeError, match="cancel_requsted_ns"):
        await store.update(stream_id, **misspelt)  # type: ignore[arg-type]
    done = Done(finish_reason="stop", tokens=0)
    payload = tokens_codec.encode(done)
    with pytest.raises(TypeError, match="finsh_reason"):
        await store.finish(stream_id, done, payload, finsh_reason="stop")  # type: ignore[call-arg]
    assert await store.redis.hgetall(names.meta_key(stream_id)) == before
    assert await store.read(stream_id, 0) == []
