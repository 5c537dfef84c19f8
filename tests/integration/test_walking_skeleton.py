"""One stream end to end, many at once, determinism, and the health surface."""

from __future__ import annotations

import asyncio

import aiohttp

from libs.client.http import SluiceClient, events
from libs.tools.stack import Stack
from tests.integration.helpers import final, read_stream, sim, text, tokens


async def test_one_stream_from_post_to_done_numbers_every_token_in_order(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(prompt="hello", sim=sim(tokens=30))
    assert created["status"] == "queued" and created["id"].startswith("st_")
    received = await read_stream(session, created["events_url"])

    assert received[0].type == "status", "the status frame comes before any token"
    assert received[0].event.retry == 1000
    seqs = [t["seq"] for t in tokens(received)]
    assert seqs == sorted(seqs)
    numbered = [
        index for t in tokens(received) for index in range(t["seq"] - t["n"] + 1, t["seq"] + 1)
    ]
    assert numbered == list(range(1, 31))
    assert all(r.event.last_event_id == str(r.json()["seq"]) for r in received if r.type == "token")
    done = final(received)
    assert done.type == "done" and done.event.last_event_id == "30"
    assert done.json()["finish_reason"] == "stop" and done.json()["tokens"] == 30

    status, info = await client.get(created["id"])
    assert status == 200 and info["status"] == "completed" and info["tokens"] == 30
    assert info["ttft_ms"] is not None


async def test_status_frame_arrives_before_the_models_first_token(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(prompt="slow start", sim=sim(tokens=3, ttft_ms=1500))
    loop = asyncio.get_running_loop()
    started = loop.time()
    async for event in events(session, created["events_url"]):
        assert event.type == "status"
        assert loop.time() - started < 1.0
        break


async def test_two_hundred_concurrent_streams_all_complete(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    async def one(index: int) -> str:
        created = await client.create(prompt=f"p{index}", sim=sim(tokens=25, tokens_per_s=50))
        received = await read_stream(session, created["events_url"], timeout_s=60)
        assert final(received).type == "done", received[-1]
        assert len(text(received)) > 0
        return str(final(received).json()["finish_reason"])

    reasons = await asyncio.gather(*(one(i) for i in range(200)))
    assert reasons == ["stop"] * 200


async def test_same_prompt_and_seed_give_the_same_text(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    async def answer(seed: int) -> str:
        created = await client.create(prompt="determinism", sim=sim(tokens=40, seed=seed))
        return text(await read_stream(session, created["events_url"]))

    first, second, other = await asyncio.gather(answer(7), answer(7), answer(8))
    assert first == second
    assert first != other


async def test_max_tokens_caps_the_answer_with_finish_reason_length(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(prompt="long", max_tokens=5, sim=sim(tokens=50))
    received = await read_stream(session, created["events_url"])
    assert final(received).json() | {} and final(received).json()["tokens"] == 5
    assert final(received).json()["finish_reason"] == "length"


async def test_finished_stream_replays_from_the_log(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(prompt="replay", sim=sim(tokens=15))
    live = await read_stream(session, created["events_url"])
    replay = await read_stream(session, created["events_url"])
    assert text(replay) == text(live)
    assert final(replay).type == "done" and final(replay).json()["tokens"] == 15


async def test_every_service_serves_health_readiness_and_metrics(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    for service in stack.services:
        for path in ("/healthz", "/readyz"):
            async with session.get(service.url + path) as response:
                assert response.status == 200, (service.name, path)
                assert response.content_type == "application/json"
        async with session.get(service.url + "/metrics") as response:
            assert response.status == 200
            assert "text/plain" in response.headers["Content-Type"]
            assert "sluice" in await response.text() or service.name in ("gateway",)
