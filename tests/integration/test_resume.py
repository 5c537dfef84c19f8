"""Resume is "TCP for tokens": whatever cuts a client's connection, it loses nothing.

A client that reconnects with ``Last-Event-ID: N`` (or ``?last_event_id=N``) gets
token N+1 next, never a repeat, never a gap; a finished stream replays the rest and
``done``; a stream whose log is gone answers ``error`` ``expired`` instead of a silent skip.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
from collections import Counter

import aiohttp
import pytest
import redis.asyncio as aioredis

from libs.client.http import SluiceClient
from libs.common import names
from libs.common.auth import mint_read_token
from libs.common.store import StreamMeta, StreamStore
from libs.common.wire import Done, TokenBatch, tokens_codec
from libs.tools.bench import resume as bench_resume
from libs.tools.stack import Stack
from tests.conftest import FAST_ENV
from tests.integration.helpers import final, read_stream, sim, text
from tests.integration.resumable import Schedule, Transcript, expected_text, follow

ROUNDS = 6
STREAMS_PER_ROUND = 4
SCHEDULES_PER_ROUND = 50
TOKENS = 600
TOKENS_PER_S = 400.0
DEFAULT_LOG_TTL_S = 3600


def random_schedule(rng: random.Random) -> tuple[float, Schedule]:
    """A start delay and one to five cuts, each reconnecting by header or query at random.

    Byte budgets are log-uniform from 1 B to 20 KB, so cuts land inside frames as often
    as between them; pauses are mostly short, sometimes long enough to land after the end.
    """
    count = rng.randint(1, 5)
    cuts = [int(math.exp(rng.uniform(0, math.log(20_000)))) for _ in range(count)]
    pauses = [rng.uniform(0, 0.1) if rng.random() < 0.8 else rng.uniform(0.5, 2.0) for _ in cuts]
    via_query = [rng.random() < 0.5 for _ in range(count + 1)]
    return rng.uniform(0, 0.8), Schedule(cuts, pauses, via_query)


async def test_random_disconnect_schedules_lose_and_repeat_nothing(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    seed = int(os.environ.get("SLUICE_RESUME_SEED", random.randrange(1 << 32)))
    rng = random.Random(seed)
    failures: list[str] = []
    statuses: Counter[str] = Counter()
    for round_index in range(ROUNDS):
        await _one_round(client, session, rng, round_index, failures, statuses)
    assert not failures, f"seed {seed}: {len(failures)} schedules failed:\n" + "\n".join(
        failures[:20]
    )
    assert statuses["running"] >= 100, f"seed {seed}: too few resumes mid-generation {statuses}"
    assert statuses["completed"] >= 30, f"seed {seed}: too few resumes after the end {statuses}"


async def _one_round(
    client: SluiceClient,
    session: aiohttp.ClientSession,
    rng: random.Random,
    round_index: int,
    failures: list[str],
    statuses: Counter[str],
) -> None:
    prompts = [f"resume {round_index}-{i} {rng.random()}" for i in range(STREAMS_PER_ROUND)]
    shape = sim(tokens=TOKENS, tokens_per_s=TOKENS_PER_S)
    created = [await client.create(prompt=p, max_tokens=TOKENS, sim=shape) for p in prompts]
    plans = [
        (rng.randrange(STREAMS_PER_ROUND), *random_schedule(rng))
        for _ in range(SCHEDULES_PER_ROUND)
    ]

    async def planned(stream: int, delay_s: float, schedule: Schedule) -> Transcript:
        await asyncio.sleep(delay_s)
        return await follow(session, [created[stream]["events_url"]], schedule)

    references, transcripts = await asyncio.gather(
        asyncio.gather(*(follow(session, [c["events_url"]]) for c in created)),
        asyncio.gather(*(planned(*plan) for plan in plans)),
    )
    for index, reference in enumerate(references):
        assert reference.text == expected_text(prompts[index], TOKENS), "uninterrupted read"
        assert reference.end_json()["tokens"] == TOKENS
    for (stream, _, schedule), transcript in zip(plans, transcripts, strict=True):
        statuses.update(transcript.connect_statuses[1:])
        problem = _compare(transcript, references[stream])
        if problem:
            failures.append(f"round {round_index} stream {stream} {schedule}: {problem}")


def _compare(transcript: Transcript, reference: Transcript) -> str:
    if transcript.violations:
        return f"violations {transcript.violations}"
    if transcript.end is None or transcript.end.type != "done":
        return f"ended with {transcript.end_type}; reasons {transcript.reconnect_reasons}"
    if transcript.end.last_event_id != str(TOKENS):
        return f"done carried id {transcript.end.last_event_id}"
    if transcript.text != reference.text:
        return f"text differs: {len(transcript.text)} vs {len(reference.text)} chars"
    return ""


@pytest.mark.parametrize("via_query", [False, True], ids=["header", "query"])
async def test_resume_mid_generation_continues_at_the_next_token(
    client: SluiceClient, session: aiohttp.ClientSession, via_query: bool
) -> None:
    created = await client.create(prompt="mid resume", sim=sim(tokens=200, tokens_per_s=100))
    cut = Schedule(cuts=[1_500], pauses=[0.3], via_query=[False, via_query])
    first = await follow(session, [created["events_url"]], cut)
    assert first.connect_statuses[-1] == "running", "the resume happened mid-generation"
    assert not first.violations and first.end_type == "done"
    assert first.text == expected_text("mid resume", 200)

    url = created["events_url"]
    resumed_at = 120
    if via_query:
        url, last_id = f"{url}&last_event_id={resumed_at}", None
    else:
        last_id = str(resumed_at)
    rest = await read_stream(session, url, last_id)
    seqs = [r.json()["seq"] - r.json()["n"] + 1 for r in rest if r.type == "token"]
    assert seqs[0] == resumed_at + 1
    whole = expected_text("mid resume", 200)
    assert text(rest) == whole[len(expected_text("mid resume", resumed_at)) :]
    assert final(rest).type == "done" and final(rest).event.last_event_id == "200"


async def test_resume_at_the_last_token_of_a_finished_stream_gets_only_done(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(prompt="at the end", sim=sim(tokens=12))
    await read_stream(session, created["events_url"])
    rest = await read_stream(session, created["events_url"], "12")
    assert [r.type for r in rest] == ["status", "done"]
    assert rest[0].json()["status"] == "completed"
    assert final(rest).json()["tokens"] == 12 and final(rest).event.last_event_id == "12"


async def test_log_and_meta_expire_log_ttl_after_the_end(
    client: SluiceClient, session: aiohttp.ClientSession, redis: aioredis.Redis
) -> None:
    created = await client.create(prompt="ttl", sim=sim(tokens=40, tokens_per_s=40))
    stream_id = created["id"]
    events = aiohttp.ClientTimeout(total=30)
    async with session.get(created["events_url"], timeout=events) as response:
        await response.content.readuntil(b"event: token")
        assert await redis.ttl(names.log_key(stream_id)) == -1, "no TTL while it runs"
        assert await redis.ttl(names.meta_key(stream_id)) > DEFAULT_LOG_TTL_S
        await response.read()
    for key in (names.log_key(stream_id), names.meta_key(stream_id)):
        ttl = await redis.ttl(key)
        assert 0 < ttl <= DEFAULT_LOG_TTL_S, (key, ttl)
        assert ttl >= DEFAULT_LOG_TTL_S - 30, (key, ttl)


async def test_resume_of_a_finished_stream_whose_log_is_gone_answers_expired(
    client: SluiceClient, session: aiohttp.ClientSession, redis: aioredis.Redis
) -> None:
    created = await client.create(prompt="gone", sim=sim(tokens=10))
    await read_stream(session, created["events_url"])
    await redis.delete(names.log_key(created["id"]))
    for last_id in (None, "4"):
        received = await read_stream(session, created["events_url"], last_id)
        assert final(received).type == "error"
        assert final(received).json() | {"message": ""} == {
            "type": "expired",
            "message": "",
            "retryable": False,
        }


async def test_resume_of_a_running_stream_whose_log_was_lost_answers_expired(
    client: SluiceClient, session: aiohttp.ClientSession, redis: aioredis.Redis
) -> None:
    """Redis lost the log mid-generation (restart without persistence): tell, never skip."""
    created = await client.create(prompt="lost", sim=sim(tokens=200, tokens_per_s=100))
    async with session.get(created["events_url"], timeout=aiohttp.ClientTimeout(total=30)) as r:
        await r.content.readuntil(b"id: 5\n")
    await redis.delete(names.log_key(created["id"]))
    received = await read_stream(session, created["events_url"], "3")
    assert final(received).type == "error", [r.type for r in received][-3:]
    assert final(received).json()["type"] == "expired"
    assert "".join(t.json()["text"] for t in received if t.type == "token") == ""


async def test_maxlen_caps_the_log_and_resume_before_the_kept_tail_answers_expired(
    stack: Stack, session: aiohttp.ClientSession, redis: aioredis.Redis
) -> None:
    """A log capped by MAXLEN keeps its tail; a resume from before it is told, not skipped."""
    store = StreamStore(redis, ttl_s=60, maxlen=100)
    stream_id = "st_" + os.urandom(16).hex()
    meta = StreamMeta(status="running", tenant="anonymous", model="sim")
    await store.admit(stream_id, meta, limit=10**6)
    batches = [TokenBatch(first=seq, texts=[f" t{seq}"], ts=0) for seq in range(1, 1001)]
    for start in range(0, len(batches), 50):
        chunk = batches[start : start + 50]
        await store.append([(stream_id, b, tokens_codec.encode(b)) for b in chunk])
    done = Done(finish_reason="stop", tokens=1000)
    await store.finish(stream_id, done, tokens_codec.encode(done), status="completed")
    length = await redis.xlen(names.log_key(stream_id))
    assert length < 300, f"MAXLEN 100 (approximate) left {length} entries"

    token = mint_read_token(FAST_ENV["SLUICE_SECRET"].encode(), stream_id, 60)
    url = f"{stack.streamer}/v1/streams/{stream_id}/events?token={token}"
    from_start = await read_stream(session, url)
    assert final(from_start).type == "error" and final(from_start).json()["type"] == "expired"
    tail = await read_stream(session, url, "990")
    assert text(tail) == "".join(f" t{seq}" for seq in range(991, 1001))
    assert final(tail).type == "done"


async def test_bench_resume_measures_every_reconnect_of_exact_streams(stack: Stack) -> None:
    args = argparse.Namespace(
        streams=3, reconnects=5, tokens=200, tokens_per_s=200.0, frames=3, pause_ms=20.0, seed=1
    )
    sample = await asyncio.wait_for(bench_resume.run_streams(stack.gateway, args), 30)
    assert sample.faults == {} and sample.streams_exact == 3
    assert len(sample.resume_ms) >= 3 * 5
