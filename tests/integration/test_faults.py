"""Any replica, NATS or Redis can fail mid-stream: no token published is lost or repeated.

These tests own their servers and suite (two runners, two streamers), kill or restart
parts of it, and compare what a resuming client read with the sim model's
deterministic text. Replicas a test kills are started by that test, so the next test
finds the base suite whole.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from libs.client.http import SluiceClient
from libs.common import names
from libs.tools.servers import Server
from libs.tools.stack import Service, Stack
from services.runner.logwriter import MAX_PENDING_TOKENS
from tests.conftest import FAST_ENV, own_servers
from tests.integration.helpers import sim
from tests.integration.resumable import Transcript, expected_text, follow, wait_until, with_streamer

LOG_TTL_S = 600
RUNNER_LOST_WITHIN_S = 5.0
SUBMIT_TIMEOUT_S = 5.0
FAST_TOKENS = 30_000


class Suite:
    """This module's own NATS, Redis and services."""

    def __init__(self, nats: Server, redis: Server, stack: Stack) -> None:
        self.nats, self.redis, self.stack = nats, redis, stack

    def streamers(self) -> list[Service]:
        return [s for s in self.stack.services if s.name == "streamer" and _alive(s)]


def _alive(service: Service) -> bool:
    return service.process is not None and service.process.poll() is None


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    tmp: Path = tmp_path_factory.mktemp("faults")
    with own_servers(tmp) as (nats, redis):
        env = {**FAST_ENV, "SLUICE_LOG_TTL_S": str(LOG_TTL_S)}
        stack = Stack(nats.url, f"{redis.url}/0", tmp, env=env)
        try:
            stack.start()
            stack.add("runner").wait_ready()
            stack.add("streamer").wait_ready()
            yield Suite(nats, redis, stack)
        finally:
            stack.stop()


@pytest.fixture
def gateway(session: aiohttp.ClientSession, suite: Suite) -> SluiceClient:
    return SluiceClient(session, suite.stack.gateway)


@pytest.fixture
async def redis(suite: Suite) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(f"{suite.redis.url}/0")
    try:
        yield client
    finally:
        await client.aclose()


async def start_streams(
    gateway: SluiceClient, count: int, tokens: int, tokens_per_s: float, tag: str
) -> list[dict[str, object]]:
    shape = sim(tokens=tokens, tokens_per_s=tokens_per_s)
    return list(
        await asyncio.gather(
            *(
                gateway.create(prompt=f"{tag} {i}", max_tokens=tokens, sim=shape)
                for i in range(count)
            )
        )
    )


def followers(
    session: aiohttp.ClientSession,
    created: list[dict[str, object]],
    streamers: list[Service],
    timeout_s: float = 60.0,
) -> tuple[list[Transcript], asyncio.Future[list[Transcript]]]:
    """Follow every stream, first on ``streamers[0]``, falling over to the others."""
    transcripts = [Transcript() for _ in created]
    tasks = [
        follow(
            session,
            [with_streamer(str(c["events_url"]), s.url) for s in streamers],
            timeout_s=timeout_s,
            transcript=transcript,
        )
        for c, transcript in zip(created, transcripts, strict=True)
    ]
    return transcripts, asyncio.ensure_future(asyncio.gather(*tasks))


def assert_exact(transcripts: list[Transcript], prompts: list[str], tokens: int) -> None:
    problems = []
    for prompt, transcript in zip(prompts, transcripts, strict=True):
        if transcript.violations or transcript.end_type != "done":
            end = transcript.end.data if transcript.end else None
            problems.append(f"{prompt}: {end} {transcript.violations}")
        elif transcript.text != expected_text(prompt, tokens):
            problems.append(f"{prompt}: text differs after {transcript.reconnect_reasons}")
        elif transcript.end_json()["tokens"] != tokens:
            problems.append(f"{prompt}: done says {transcript.end_json()['tokens']} tokens")
    assert not problems, "\n".join(problems)


async def readiness(session: aiohttp.ClientSession, stack: Stack) -> list[int]:
    statuses = []
    for service in stack.services:
        if _alive(service):
            async with session.get(f"{service.url}/readyz") as response:
                statuses.append(response.status)
    return statuses


async def _all_unready(session: aiohttp.ClientSession, stack: Stack) -> bool:
    return all(status == 503 for status in await readiness(session, stack))


async def _all_ready(session: aiohttp.ClientSession, stack: Stack) -> bool:
    return all(status == 200 for status in await readiness(session, stack))


async def wait_until_async(
    condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.1)


async def test_kill_9_of_the_serving_streamer_resumes_on_the_other_replica_exactly(
    suite: Suite, gateway: SluiceClient, session: aiohttp.ClientSession
) -> None:
    victim = suite.stack.add("streamer")
    victim.wait_ready()
    created = await start_streams(gateway, 10, 200, 100, "streamer kill")
    transcripts, done = followers(session, created, [victim, *suite.streamers()])
    await wait_until(lambda: all(t.last_id >= 20 for t in transcripts), "20 tokens each")
    victim.kill()
    await asyncio.wait_for(done, 60)

    assert_exact(transcripts, [f"streamer kill {i}" for i in range(10)], 200)
    for transcript in transcripts:
        assert transcript.reconnect_reasons[0].startswith("dropped"), transcript.reconnect_reasons
        assert transcript.connect_statuses[1] == "running", "resumed mid-generation"


async def test_sigterm_tells_100_open_streams_to_reconnect_and_they_lose_nothing(
    suite: Suite, gateway: SluiceClient, session: aiohttp.ClientSession
) -> None:
    victim = suite.stack.add("streamer")
    victim.wait_ready()
    created = await start_streams(gateway, 100, 150, 50, "sigterm")
    transcripts, done = followers(session, created, [victim, *suite.streamers()])
    await wait_until(lambda: all(t.last_id >= 5 for t in transcripts), "5 tokens each")
    signalled = time.monotonic()
    victim.signal(signal.SIGTERM)
    assert victim.process is not None
    exit_code = await asyncio.to_thread(victim.process.wait, 30)
    exited_s = time.monotonic() - signalled
    await asyncio.wait_for(done, 60)

    assert exit_code == 0
    drain_budget_s = float(FAST_ENV["SLUICE_DRAIN_TIMEOUT_S"])
    assert exited_s < drain_budget_s, f"streamer took {exited_s:.1f}s to exit"
    assert_exact(transcripts, [f"sigterm {i}" for i in range(100)], 150)
    told = [t.reconnect_reasons[:1] == ["reconnect"] for t in transcripts]
    assert all(told), f"{told.count(False)} streams were not told to reconnect"


async def test_kill_9_of_a_runner_fails_its_streams_runner_lost_and_spares_the_others(
    suite: Suite,
    gateway: SluiceClient,
    session: aiohttp.ClientSession,
    redis: aioredis.Redis,
) -> None:
    victim = suite.stack.add("runner")
    victim.wait_ready()
    victim_id = victim.env["SLUICE_RUNNER_ID"]
    created = await start_streams(gateway, 12, 300, 50, "runner kill")
    transcripts, done = followers(session, created, suite.streamers())
    await wait_until(lambda: all(t.last_id >= 5 for t in transcripts), "5 tokens each")
    runner_of = [await redis.hget(names.meta_key(str(c["id"])), "runner_id") for c in created]
    lost = [i for i, rid in enumerate(runner_of) if rid == victim_id.encode()]
    assert 0 < len(lost) < len(created), f"placement put {len(lost)} of 12 on the victim"
    killed = time.monotonic()
    victim.kill()
    await wait_until(
        lambda: all(transcripts[i].end is not None for i in lost), "runner_lost", timeout_s=15
    )
    detected_s = time.monotonic() - killed
    await asyncio.wait_for(done, 60)

    assert detected_s < RUNNER_LOST_WITHIN_S, f"runner_lost after {detected_s:.1f}s"
    for i in lost:
        error = transcripts[i].end_json()
        assert transcripts[i].end_type == "error" and error["type"] == "runner_lost", error
        assert error["retryable"] is True
        assert not transcripts[i].violations
        assert expected_text(f"runner kill {i}", 300).startswith(transcripts[i].text)
        status, info = await gateway.get(str(created[i]["id"]))
        assert status == 200 and info["status"] == "failed", info
        assert info["tokens"] == transcripts[i].last_id, "every logged token was delivered"
        for key in (names.log_key(str(created[i]["id"])), names.meta_key(str(created[i]["id"]))):
            assert 0 < await redis.ttl(key) <= LOG_TTL_S, f"{key} expires SLUICE_LOG_TTL_S later"
    spared = [i for i in range(len(created)) if i not in lost]
    assert_exact([transcripts[i] for i in spared], [f"runner kill {i}" for i in spared], 300)


async def test_nats_restart_mid_stream_every_stream_completes_exactly(
    suite: Suite, gateway: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await start_streams(gateway, 20, 300, 60, "nats restart")
    transcripts, done = followers(session, created, suite.streamers())
    await wait_until(lambda: all(t.last_id >= 30 for t in transcripts), "30 tokens each")
    await asyncio.to_thread(suite.nats.stop)
    await wait_until_async(lambda: _all_unready(session, suite.stack), "every service unready")
    at_stop = [t.last_id for t in transcripts]
    status, answer = await gateway.create_raw(b'{"prompt": "during the outage"}')
    assert status == 503 and answer["error"]["type"] == "unavailable", answer
    late, late_done = followers(session, created[:1], suite.streamers()[::-1])
    await asyncio.sleep(float(FAST_ENV["SLUICE_RUNNER_DEAD_AFTER_S"]) + 1)
    during = [t.last_id - before for t, before in zip(transcripts, at_stop, strict=True)]
    late_during = late[0].last_id
    await asyncio.to_thread(suite.nats.start)
    await asyncio.wait_for(asyncio.gather(done, late_done), 60)

    assert all(during), f"readers are served from the log while NATS is out: {during}"
    assert_exact(transcripts, [f"nats restart {i}" for i in range(20)], 300)
    assert_exact(late, ["nats restart 0"], 300)
    assert late_during and not late[0].reconnect_reasons, "a reader joining in the outage is served"
    await wait_until_async(lambda: _all_ready(session, suite.stack), "every service ready again")
    for c in created:
        assert (await gateway.get(str(c["id"])))[1]["status"] == "completed"


async def test_redis_restart_mid_stream_every_stream_completes_exactly(
    suite: Suite, gateway: SluiceClient, session: aiohttp.ClientSession
) -> None:
    """Redis restarts with its append-only file: the runners' writes wait and retry.

    One stream is debounced so that it is placed on a runner while Redis is out, and
    one is fast enough to fill the runner's bounded buffer of unlogged tokens.
    """
    created = await start_streams(gateway, 20, 300, 60, "redis restart")
    debounced = sim(tokens=100, tokens_per_s=100)
    fast = sim(tokens=FAST_TOKENS, tokens_per_s=10_000)
    created += [
        await gateway.create(prompt="placed in the outage", sim=debounced, debounce_ms=1000),
        await gateway.create(prompt="fast", max_tokens=FAST_TOKENS, sim=fast),
    ]
    transcripts, done = followers(session, created, suite.streamers())
    await wait_until(lambda: all(t.last_id >= 30 for t in transcripts[:20]), "30 tokens each")
    await asyncio.to_thread(suite.redis.stop)
    assert transcripts[-1].last_id < FAST_TOKENS - MAX_PENDING_TOKENS, "fast one still runs"
    await wait_until_async(lambda: _all_unready(session, suite.stack), "every service unready")
    asked = time.monotonic()
    status, answer = await gateway.create_raw(b'{"prompt": "during the outage"}')
    assert status == 503 and answer["error"]["type"] == "unavailable", answer
    assert time.monotonic() - asked < SUBMIT_TIMEOUT_S, "the coordinator answered, not a timeout"
    url = with_streamer(str(created[0]["events_url"]), suite.streamers()[0].url)
    async with session.get(url, headers={"Last-Event-ID": "1"}) as response:
        assert response.status == 503, await response.text()
        assert response.headers["Retry-After"]
        assert (await response.json())["error"]["type"] == "unavailable"
    await asyncio.sleep(2)
    await asyncio.to_thread(suite.redis.start)
    await asyncio.wait_for(done, 60)

    assert_exact(transcripts[:20], [f"redis restart {i}" for i in range(20)], 300)
    assert_exact(transcripts[20:21], ["placed in the outage"], 100)
    assert_exact(transcripts[21:], ["fast"], FAST_TOKENS)
    await wait_until_async(lambda: _all_ready(session, suite.stack), "every service ready again")
    for c in created:
        assert (await gateway.get(str(c["id"])))[1]["status"] == "completed"
