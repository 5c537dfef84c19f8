"""Supersede and debounce: a conversation has one current stream, and drafts cost no tokens."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from libs.client.http import Received, SluiceClient, events
from libs.tools.stack import Stack
from tests.conftest import FAST_ENV, own_servers
from tests.integration.helpers import final, read_stream, sim, text, tokens

TIMEOUT_S = 15.0
GAP_S = 0.05
DEBOUNCE_MS = 500
ANSWER = sim(tokens=20, tokens_per_s=200)


def conversation() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


async def drafts(
    client: SluiceClient, conversation_id: str, count: int, **body: Any
) -> list[dict[str, Any]]:
    """``count`` prompts in one conversation, ``GAP_S`` apart, as a fast typist sends them."""
    created = []
    for number in range(count):
        if number:
            await asyncio.sleep(GAP_S)
        created.append(
            await client.create(
                prompt=f"draft {number}", conversation_id=conversation_id, sim=ANSWER, **body
            )
        )
    return created


async def assert_only_the_last_answered(
    client: SluiceClient, session: aiohttp.ClientSession, created: list[dict[str, Any]]
) -> None:
    finals = [
        final(await read_stream(session, c["events_url"], timeout_s=TIMEOUT_S)) for c in created
    ]
    for superseded, done in zip(created[:-1], finals[:-1], strict=True):
        assert done.json() == {"finish_reason": "superseded", "tokens": 0, "tokens_after_cancel": 0}
        _, info = await client.get(superseded["id"])
        assert info["status"] == "superseded" and info["tokens"] == 0
        assert "started_at" not in info, "a debounced draft never reaches a model"
    assert finals[-1].json()["finish_reason"] == "stop" and finals[-1].json()["tokens"] == 20
    _, last = await client.get(created[-1]["id"])
    assert last["status"] == "completed"


async def test_ten_prompts_fifty_ms_apart_leave_one_answer_and_no_model_tokens(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await drafts(client, conversation(), 10, debounce_ms=DEBOUNCE_MS)
    await assert_only_the_last_answered(client, session, created)


async def test_a_new_prompt_supersedes_the_running_stream_at_once(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    conversation_id = conversation()
    slow = sim(tokens=1000, tokens_per_s=50, ttft_ms=20)
    first = await client.create(prompt="first", conversation_id=conversation_id, sim=slow)
    received: list[Received] = []
    reached = asyncio.Event()

    async def follow() -> None:
        async for event in events(session, first["events_url"]):
            received.append(event)
            if len(tokens(received)) >= 5:
                reached.set()

    follower = asyncio.create_task(follow())
    await asyncio.wait_for(reached.wait(), TIMEOUT_S)
    sent = time.monotonic()
    second = await client.create(prompt="second", conversation_id=conversation_id, sim=ANSWER)
    await asyncio.wait_for(follower, TIMEOUT_S)
    stopped_s = time.monotonic() - sent

    usage = final(received).json()
    print(f"\nsupersede of a running stream: done {stopped_s * 1000:.1f} ms after POST; {usage}")
    assert usage["finish_reason"] == "superseded" and usage["tokens_after_cancel"] <= 2
    assert stopped_s < 1.0
    _, info = await client.get(first["id"])
    assert info["status"] == "superseded" and info["tokens"] == usage["tokens"]
    answer = await read_stream(session, second["events_url"])
    assert final(answer).json()["finish_reason"] == "stop"


async def test_supersede_false_lets_the_previous_stream_finish(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    conversation_id = conversation()
    body = sim(tokens=30, tokens_per_s=100)
    first = await client.create(prompt="keep", conversation_id=conversation_id, sim=body)
    second = await client.create(
        prompt="also", conversation_id=conversation_id, supersede=False, sim=body
    )
    for created in (first, second):
        received = await read_stream(session, created["events_url"])
        assert final(received).json()["finish_reason"] == "stop"
        assert len(text(received).split()) == 30


async def test_streams_without_a_conversation_never_supersede_each_other(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = [await client.create(prompt=f"solo {n}", sim=ANSWER) for n in range(3)]
    for one in created:
        assert final(await read_stream(session, one["events_url"])).json()["finish_reason"] == (
            "stop"
        )


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A suite of its own: two tenants, and two coordinators sharing the submissions."""
    tmp = tmp_path_factory.mktemp("replicas")
    with own_servers(tmp) as (nats, redis):
        env = {**FAST_ENV, "SLUICE_API_KEYS": "key-a:tenant-a,key-b:tenant-b"}
        suite = Stack(nats.url, f"{redis.url}/0", tmp, env=env)
        try:
            suite.start()
            suite.add("coordinator").wait_ready()
            yield suite
        finally:
            suite.stop()


async def admitted(session: aiohttp.ClientSession, stack: Stack) -> list[float]:
    """Streams admitted by each coordinator so far."""
    counts = []
    for service in (s for s in stack.services if s.name == "coordinator"):
        async with session.get(service.url + "/metrics") as response:
            body = await response.text()
        counts.append(
            sum(
                sample.value
                for family in text_string_to_metric_families(body)
                for sample in family.samples
                if sample.name == "sluice_streams_submitted_total"
            )
        )
    return counts


async def test_supersede_works_across_two_coordinator_replicas(
    replicas: Stack, session: aiohttp.ClientSession
) -> None:
    """Drafts keep coming until both replicas have admitted some: one superseded another's."""
    client = SluiceClient(session, replicas.gateway, api_key="key-a")
    conversation_id = conversation()
    before = await admitted(session, replicas)
    created: list[dict[str, Any]] = []
    while len(created) < 10 or 0 in [
        now - then for now, then in zip(await admitted(session, replicas), before, strict=True)
    ]:
        assert len(created) < 40, "the queue group never gave the second coordinator a stream"
        if created:
            await asyncio.sleep(GAP_S)
        created.append(
            await client.create(
                prompt=f"draft {len(created)}",
                conversation_id=conversation_id,
                debounce_ms=DEBOUNCE_MS,
                sim=ANSWER,
            )
        )
    after = await admitted(session, replicas)
    print(f"\n{len(created)} drafts; admitted per coordinator: {after} (before {before})")
    await assert_only_the_last_answered(client, session, created)


async def test_two_tenants_with_the_same_conversation_id_do_not_supersede_each_other(
    replicas: Stack, session: aiohttp.ClientSession
) -> None:
    body = sim(tokens=30, tokens_per_s=100)
    streams = []
    for key in ("key-a", "key-b"):
        client = SluiceClient(session, replicas.gateway, api_key=key)
        streams.append(await client.create(prompt=key, conversation_id="shared", sim=body))
    for created in streams:
        received = await read_stream(session, created["events_url"])
        assert final(received).json()["finish_reason"] == "stop"
