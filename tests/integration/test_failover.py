"""No answer is lost to a runner: rolling restarts hand answers over, dead runners' answers
continue elsewhere, and a runner that was only frozen writes nothing after its answers moved.

The suite has three runners and a scripted OpenAI-compatible upstream. A test that
stops or kills a runner starts a fresh one, so the next test finds three again.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from libs.client.http import SluiceClient
from libs.common import names
from libs.common.store import StreamStore
from libs.common.wire import TokenBatch
from libs.tools.stack import Service, Stack
from tests.conftest import FAST_ENV, own_servers
from tests.integration.helpers import metric, sim
from tests.integration.resumable import Transcript, wait_until
from tests.integration.test_faults import (
    assert_exact,
    followers,
    start_streams,
    wait_until_async,
)
from tests.integration.test_openai_backend import FINISH, FakeUpstream, chunk

DRAIN_TIMEOUT_S = 30
HANDED_OFF_WITHIN_S = 10.0  # a runner that drained instead would take DRAIN_TIMEOUT_S
UPSTREAM_TOKENS = 200


class Suite:
    def __init__(self, stack: Stack, redis_url: str) -> None:
        self.stack, self.redis_url = stack, redis_url

    def runners(self) -> list[Service]:
        return [
            s
            for s in self.stack.services
            if s.name == "runner" and s.process is not None and s.process.poll() is None
        ]

    def replace(self) -> Service:
        """A fresh runner in place of one that was stopped or killed."""
        fresh = self.stack.add("runner")
        fresh.wait_ready()
        return fresh


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[FakeUpstream]:
    """Answers ``t0 t1 …`` up to :data:`UPSTREAM_TOKENS`, going on from any assistant prefix."""
    fake = FakeUpstream()

    async def script(writer: asyncio.StreamWriter) -> None:
        messages = fake.requests[-1]["messages"]
        prefix = messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""
        for index in range(len(prefix.split()), UPSTREAM_TOKENS):
            writer.write(chunk(f"t{index} "))
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(FINISH + b"data: [DONE]\n\n")
        await writer.drain()

    fake.script = script
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    fake.port = server.sockets[0].getsockname()[1]
    yield fake
    server.close()


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Suite]:
    tmp: Path = tmp_path_factory.mktemp("failover")
    base_url = f"http://127.0.0.1:{upstream.port}/v1"
    models = {
        "scripted": {"base_url": base_url, "continuation": "prefix"},
        "scripted-none": {"base_url": base_url, "continuation": "none"},
    }
    env = {
        **FAST_ENV,
        "SLUICE_DRAIN_TIMEOUT_S": str(DRAIN_TIMEOUT_S),
        "SLUICE_MODELS": json.dumps(models),
    }
    with own_servers(tmp) as (nats, redis):
        stack = Stack(nats.url, f"{redis.url}/0", tmp, env=env)
        try:
            stack.start()
            for _ in range(2):
                stack.add("runner").wait_ready()
            yield Suite(stack, f"{redis.url}/0")
        finally:
            stack.stop()


@pytest.fixture
def gateway(session: aiohttp.ClientSession, suite: Suite) -> SluiceClient:
    return SluiceClient(session, suite.stack.gateway)


@pytest.fixture
async def store(suite: Suite) -> AsyncIterator[StreamStore]:
    client = aioredis.Redis.from_url(suite.redis_url)
    try:
        yield StreamStore(client, ttl_s=60, maxlen=10**6)
    finally:
        await client.aclose()


async def rolling_restart(
    suite: Suite, gateway: SluiceClient, session: aiohttp.ClientSession, shape: tuple[int, int, int]
) -> None:
    """SIGTERM every runner in turn (starting a fresh one each time) while ``shape`` =
    (streams, tokens, tokens/s) run; every answer must equal an uninterrupted one."""
    count, tokens, rate = shape
    tag = f"rolling {time.monotonic_ns()}"
    created = await start_streams(gateway, count, tokens, rate, tag)
    transcripts, done = followers(
        session, created, [suite.stack.first("streamer")], 30 + 3 * tokens / rate
    )
    await wait_until(lambda: all(t.last_id >= 10 for t in transcripts), "10 tokens each")
    exits = []
    for runner in suite.runners():
        assert runner.process is not None
        signalled = time.monotonic()
        runner.signal(signal.SIGTERM)
        code = await asyncio.to_thread(runner.process.wait, DRAIN_TIMEOUT_S + 10)
        exits.append((code, time.monotonic() - signalled))
        await asyncio.to_thread(suite.replace)
    await asyncio.wait_for(done, 30 + 3 * tokens / rate)

    assert all(code == 0 and took < HANDED_OFF_WITHIN_S for code, took in exits), exits
    assert_exact(transcripts, [f"{tag} {i}" for i in range(count)], tokens)
    moved = [t for t in transcripts if t.continued_at]
    assert moved, "no answer was running on a restarted runner"
    for transcript in moved:
        assert_continued(transcript, tokens)


def assert_continued(transcript: Transcript, tokens: int) -> None:
    """Each move is in ``done``: an attempt per move plus the first, summing to the answer."""
    end = transcript.end_json()
    assert sum(end["attempts"]) == tokens, end
    assert len(end["attempts"]) == len(transcript.continued_at) + 1, (end, transcript.statuses)
    assert end["recomputed"] == sum(transcript.continued_at), "sim regenerates what was logged"


async def test_a_rolling_restart_of_every_runner_loses_no_answer(
    suite: Suite, gateway: SluiceClient, session: aiohttp.ClientSession
) -> None:
    await rolling_restart(suite, gateway, session, (15, 1_000, 100))


@pytest.mark.slow
async def test_a_rolling_restart_under_60_long_answers_loses_none(
    suite: Suite, gateway: SluiceClient, session: aiohttp.ClientSession
) -> None:
    await rolling_restart(suite, gateway, session, (60, 2_000, 50))


@pytest.mark.slow
async def test_kill_9_of_one_runner_of_three_under_60_long_answers_loses_none(
    suite: Suite, gateway: SluiceClient, session: aiohttp.ClientSession, store: StreamStore
) -> None:
    tag = f"kill {time.monotonic_ns()}"
    answers = await running(suite, gateway, session, store, tag, (60, 2_000, 50), 100)
    transcripts, done, victim, on_victim = answers
    victim.kill()
    await asyncio.wait_for(done, 120)
    await asyncio.to_thread(suite.replace)

    assert_exact(transcripts, [f"{tag} {i}" for i in range(60)], 2_000)
    for i, transcript in enumerate(transcripts):
        assert bool(transcript.continued_at) == (i in on_victim), transcript.statuses
        if i in on_victim:
            assert_continued(transcript, 2_000)


async def running(
    suite: Suite,
    gateway: SluiceClient,
    session: aiohttp.ClientSession,
    store: StreamStore,
    tag: str,
    shape: tuple[int, int, int],
    tokens_in: int,
) -> tuple[list[Transcript], asyncio.Future[list[Transcript]], Service, set[int]]:
    """``shape`` = (answers, tokens, tokens/s) followed to ``tokens_in`` tokens each; a
    runner, and the indexes of the answers it holds (some, not all)."""
    count, tokens, rate = shape
    created = await start_streams(gateway, count, tokens, rate, tag)
    transcripts, done = followers(
        session, created, [suite.stack.first("streamer")], 60 + tokens / rate
    )
    await wait_until(lambda: all(t.last_id >= tokens_in for t in transcripts), "tokens each", 60)
    runner = suite.runners()[0]
    owners = [await store.meta(t.stream_id) for t in transcripts]
    held = {i for i, m in enumerate(owners) if m and m.runner_id == runner.env["SLUICE_RUNNER_ID"]}
    assert 0 < len(held) < count, f"placement put {len(held)} on one runner"
    return transcripts, done, runner, held


async def test_a_frozen_runner_writes_nothing_after_its_answers_moved_and_stops_them(
    suite: Suite, gateway: SluiceClient, session: aiohttp.ClientSession, store: StreamStore
) -> None:
    tag = f"frozen {time.monotonic_ns()}"
    transcripts, done, victim, frozen = await running(
        suite, gateway, session, store, tag, (9, 600, 50), 20
    )
    ids = [transcripts[i].stream_id for i in frozen]
    logged_before = await metric(session, victim.url, "sluice_runner_tokens_total")
    victim.signal(signal.SIGSTOP)
    try:
        await wait_until_async(lambda: all_claimed(store, ids), "the frozen streams moved", 30)
    finally:
        victim.signal(signal.SIGCONT)
    await asyncio.wait_for(done, 90)

    assert_exact(transcripts, [f"{tag} {i}" for i in range(9)], 600)
    for i in frozen:
        assert len(transcripts[i].continued_at) == 1, transcripts[i].statuses
        await assert_log_contiguous(store, transcripts[i].stream_id, 600)

    async def stopped() -> bool:
        return await metric(session, victim.url, "sluice_runner_slots_in_use") == 0

    await wait_until_async(stopped, "the frozen runner stopped the moved generations", 15)
    logged_after = await metric(session, victim.url, "sluice_runner_tokens_total")
    assert logged_after - logged_before <= 10 * len(frozen), "it logged after it woke"
    victim.stop()
    await asyncio.to_thread(suite.replace)


async def all_claimed(store: StreamStore, ids: list[str]) -> bool:
    """Every stream's continuation has started: another runner claimed it from the log."""
    for stream_id in ids:
        meta = await store.meta(stream_id)
        handoffs = await store.redis.hget(names.meta_key(stream_id), "handoffs")
        if meta is None or meta.epoch < 1 or not handoffs:
            return False
    return True


async def assert_log_contiguous(store: StreamStore, stream_id: str, tokens: int) -> None:
    last = 0
    for message in await store.read(stream_id, 0, count=10**6):
        if isinstance(message, TokenBatch):
            assert message.first == last + 1, f"log jumps from {last} to {message.first}"
            last = message.last
    assert last == tokens


async def scripted_answer(
    gateway: SluiceClient, session: aiohttp.ClientSession, suite: Suite, model: str
) -> tuple[Transcript, asyncio.Future[list[Transcript]], Service]:
    """An answer from the scripted upstream, 20 tokens in; and the runner that holds it."""
    created = await gateway.create(
        model=model, messages=[{"role": "user", "content": "count"}], max_tokens=1_000
    )
    transcripts, done = followers(session, [created], [suite.stack.first("streamer")], 60)
    await wait_until(lambda: transcripts[0].last_id >= 20, "20 tokens")
    return transcripts[0], done, await holder(suite, str(created["id"]))


async def holder(suite: Suite, stream_id: str) -> Service:
    """The runner that holds the stream now."""
    client = aioredis.Redis.from_url(suite.redis_url)
    try:
        owner = await client.hget(names.meta_key(stream_id), "runner_id")
    finally:
        await client.aclose()
    return next(r for r in suite.runners() if r.env["SLUICE_RUNNER_ID"].encode() == owner)


async def test_a_tool_call_cut_by_a_kill_ends_with_the_whole_call_on_its_channels(
    suite: Suite, gateway: SluiceClient, session: aiohttp.ClientSession
) -> None:
    """The fragments logged before the move count in ``done``'s call (the runner that
    goes on reads them from the log), and reasoning and call tokens keep their channels:
    the answer equals an uninterrupted one."""
    stops = {"type": "array", "minItems": 60, "items": {"type": "string"}}
    plan = {"name": "plan", "parameters": {"type": "object", "properties": {"stops": stops}}}
    request: dict[str, Any] = {
        "prompt": f"plan a trip {time.monotonic_ns()}",
        "max_tokens": 1_000,
        "tools": [{"type": "function", "function": plan}],
    }
    shape = {**sim(tokens_per_s=10, seed=3), "reasoning_tokens": 10}
    created = await gateway.create(**request, sim=shape)
    transcripts, done = followers(session, [created], [suite.stack.first("streamer")], 120)
    await wait_until(lambda: transcripts[0].last_id >= 30, "30 tokens, into the call")
    (await holder(suite, str(created["id"]))).kill()
    await asyncio.wait_for(done, 120)
    await asyncio.to_thread(suite.replace)
    whole = await gateway.create(**request, sim={**shape, "tokens_per_s": 1_000})
    [uninterrupted], finished = followers(session, [whole], [suite.stack.first("streamer")], 60)
    await asyncio.wait_for(finished, 60)

    [moved] = transcripts
    assert len(moved.continued_at) == 1 and not moved.violations, moved.statuses
    assert moved.text == uninterrupted.text and moved.last_id == uninterrupted.last_id
    end, expected = moved.end_json(), uninterrupted.end_json()
    assert end["finish_reason"] == "tool_calls" and len(end["tool_calls"]) == 1, end
    assert end["tool_calls"] == expected["tool_calls"]
    assert end["reasoning_tokens"] == expected["reasoning_tokens"] == 10


async def test_openai_prefix_continuation_sends_the_logged_answer_and_goes_on_from_it(
    suite: Suite, gateway: SluiceClient, session: aiohttp.ClientSession, upstream: FakeUpstream
) -> None:
    transcript, done, victim = await scripted_answer(gateway, session, suite, "scripted")
    victim.kill()
    await asyncio.wait_for(done, 60)
    await asyncio.to_thread(suite.replace)

    assert transcript.end_type == "done" and not transcript.violations, transcript.end
    assert transcript.text == "".join(f"t{i} " for i in range(UPSTREAM_TOKENS))
    [moved_at] = transcript.continued_at
    request = upstream.requests[-1]
    assert request["continue_final_message"] is True and request["add_generation_prompt"] is False
    prefix = "".join(f"t{i} " for i in range(moved_at))
    assert request["messages"][-1] == {"role": "assistant", "content": prefix}
    end = transcript.end_json()
    assert end["attempts"] == [moved_at, UPSTREAM_TOKENS - moved_at], end
    assert end["recomputed"] == 0, "a prefix continuation generates nothing twice"


async def test_a_model_without_continuation_fails_retryable_when_its_runner_dies(
    suite: Suite, gateway: SluiceClient, session: aiohttp.ClientSession
) -> None:
    transcript, done, victim = await scripted_answer(gateway, session, suite, "scripted-none")
    victim.kill()
    await asyncio.wait_for(done, 60)
    await asyncio.to_thread(suite.replace)

    error = transcript.end_json()
    assert transcript.end_type == "error" and error["type"] == "runner_lost", error
    assert error["retryable"] is True and "no runner can continue" in error["message"], error
    assert not transcript.continued_at and not transcript.violations
    assert transcript.text == "".join(f"t{i} " for i in range(transcript.last_id))
