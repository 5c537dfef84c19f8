"""The WebSocket data path keeps the SSE contract: contiguous, resumable, bounded, cancellable.

``/v1/streams/{id}/ws`` carries the same numbered tokens as ``/events`` and takes the
control frames of ``/v1/control`` for its own stream. The slow-reader bound is tested
beside SSE's in ``test_flow_control``; the flush policies, which both transports
share, are tested here over SSE.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from libs.client.http import Received, SluiceClient, socket_events, socket_url
from libs.common import names
from tests.integration.channel_reading import accumulate
from tests.integration.helpers import final, read_stream, sim, text, tokens
from tests.integration.resumable import expected_text

TIMEOUT_S = 30.0
PACE = 5.0


async def read_socket(
    session: aiohttp.ClientSession, url: str, timeout_s: float = TIMEOUT_S
) -> list[Received]:
    async def collect() -> list[Received]:
        async with session.ws_connect(url) as ws:
            return [event async for event in socket_events(ws)]

    return await asyncio.wait_for(collect(), timeout_s)


def first_seqs(received: list[Received]) -> list[int]:
    return [t["seq"] - t["n"] + 1 for t in tokens(received)]


def assert_contiguous(received: list[Received], count: int) -> None:
    seen = 0
    for token in tokens(received):
        assert token["seq"] - token["n"] == seen, (seen, token)
        seen = token["seq"]
    assert seen == count


async def test_a_socket_delivers_status_then_every_token_in_order_then_done(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(prompt="over ws", sim=sim(tokens=200, tokens_per_s=200))
    received = await read_socket(session, socket_url(created["events_url"]))
    assert received[0].type == "status"
    assert_contiguous(received, 200)
    assert text(received) == expected_text("over ws", 200)
    done = final(received)
    assert done.type == "done" and done.json()["seq"] == 200 and done.json()["tokens"] == 200


async def test_a_socket_resumes_at_the_token_after_last_event_id(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(prompt="ws resume", sim=sim(tokens=200, tokens_per_s=100))
    url = socket_url(created["events_url"]) + "&last_event_id=120"
    rest = await read_socket(session, url)
    assert first_seqs(rest)[0] == 121
    whole = expected_text("ws resume", 200)
    assert text(rest) == whole[len(expected_text("ws resume", 120)) :]
    assert final(rest).type == "done" and final(rest).event.last_event_id == "200"


async def test_a_cancel_frame_on_the_socket_is_acked_and_ends_the_stream(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(prompt="ws cancel", sim=sim(tokens=2_000, tokens_per_s=50))
    received: list[Received] = []
    async with session.ws_connect(socket_url(created["events_url"])) as ws:
        async for event in socket_events(ws):
            received.append(event)
            if len(tokens(received)) == 1 and event.type == "token":
                await ws.send_json({"type": "cancel", "stream_id": created["id"], "ref": "c1"})
    ack = next(r.json() for r in received if r.type == "ack")
    assert ack["ref"] == "c1" and ack["stream_id"] == created["id"]
    done = final(received).json()
    assert final(received).type == "done" and done["finish_reason"] == "cancelled"
    assert done["tokens"] < 2_000
    assert_contiguous(received, done["tokens"])


async def test_a_pace_frame_caps_frames_per_second_without_losing_tokens(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(
        prompt="ws paced", max_tokens=400, sim=sim(tokens=400, tokens_per_s=200)
    )
    received: list[Received] = []
    paced_from = 0
    async with session.ws_connect(socket_url(created["events_url"])) as ws:
        await ws.send_json({"type": "pace", "stream_id": created["id"], "max_events_per_s": PACE})
        async for event in socket_events(ws):
            received.append(event)
            if event.type == "ack":
                paced_from = time.time_ns()
    frames = [r for r in received if r.type == "token" and r.at_ns > paced_from]
    elapsed_s = (received[-1].at_ns - paced_from) / 1e9
    assert paced_from and len(frames) <= PACE * elapsed_s + 2, (len(frames), elapsed_s)
    assert final(received).type == "done", received[-3:]
    assert_contiguous(received, 400)


async def test_a_socket_answers_bad_or_foreign_frames_with_errors_and_stays_open(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    other = await client.create(prompt="someone else", sim=sim(tokens=5))
    created = await client.create(prompt="ws errors", sim=sim(tokens=100, tokens_per_s=50))
    frames: list[dict[str, Any]] = [
        {"type": "cancel", "stream_id": other["id"], "ref": "foreign"},
        {"type": "submit", "prompt": "hi", "ref": "submit"},
        {"type": "pace", "stream_id": created["id"], "max_events_per_s": -1, "ref": "bad"},
        {"type": "ping", "ref": "p"},
        {"type": "feedback", "stream_id": created["id"], "rating": 1, "ref": "rated"},
    ]
    async with session.ws_connect(socket_url(created["events_url"])) as ws:
        for frame in frames:
            await ws.send_json(frame)
        received = [event async for event in socket_events(ws)]
    replies = {r.json()["ref"]: r.json() for r in received if r.type in ("ack", "error", "pong")}
    assert replies["foreign"]["error"]["type"] == "forbidden"
    assert replies["submit"]["error"]["type"] == "invalid_request"
    assert replies["bad"]["error"]["type"] == "invalid_request"
    assert replies["p"]["type"] == "pong"
    assert replies["rated"]["type"] == "ack"
    assert final(received).type == "done"
    assert_contiguous(received, 100)


async def test_a_socket_to_a_stream_whose_log_is_gone_answers_expired(
    client: SluiceClient, session: aiohttp.ClientSession, servers: tuple[str, str]
) -> None:
    created = await client.create(prompt="ws gone", sim=sim(tokens=10))
    await read_socket(session, socket_url(created["events_url"]))
    redis = aioredis.Redis.from_url(servers[1])
    try:
        await redis.delete(names.log_key(created["id"]))
    finally:
        await redis.aclose()
    received = await read_socket(session, socket_url(created["events_url"]))
    assert [r.type for r in received] == ["error"]
    assert received[0].json()["error"] | {"message": ""} == {
        "type": "expired",
        "message": "",
        "retryable": False,
    }


async def test_a_socket_with_a_bad_read_token_is_refused_before_the_upgrade(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(prompt="ws forbidden", sim=sim(tokens=5))
    url = socket_url(created["events_url"]).replace("token=", "token=x")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(url)
    assert refused.value.status == 403


async def test_flush_token_writes_one_frame_per_token(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(prompt="per token", sim=sim(tokens=200, tokens_per_s=400))
    received = await read_stream(session, created["events_url"] + "&flush=token")
    assert [t["n"] for t in tokens(received)] == [1] * 200
    assert text(received) == expected_text("per token", 200)


async def test_flush_in_ms_writes_fixed_batches(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(prompt="batched", sim=sim(tokens=200, tokens_per_s=200))
    received = await read_stream(session, created["events_url"] + "&flush=100")
    frames = tokens(received)
    assert len(frames) <= 15, len(frames)  # 1 s of tokens at 10 batches/s, with slack
    assert text(received) == expected_text("batched", 200)


async def test_an_unknown_flush_policy_is_a_400(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(prompt="bad flush", sim=sim(tokens=5))
    async with session.get(created["events_url"] + "&flush=sometimes") as response:
        body = await response.json()
    assert response.status == 400 and body["error"]["type"] == "invalid_request"


async def test_a_socket_carries_reasoning_and_tool_call_channels_exactly(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    created = await client.create(
        messages=[{"role": "user", "content": "look it up"}],
        tools=[tool],
        sim={**sim(seed=4), "reasoning_tokens": 12},
    )
    over_socket = await read_socket(session, socket_url(created["events_url"]))
    over_sse = await read_stream(session, created["events_url"])
    assert [t.get("channel") for t in tokens(over_socket)][:1] == ["reasoning"]
    assert accumulate(over_socket) == accumulate(over_sse)
    done = final(over_socket).json()
    assert done["finish_reason"] == "tool_calls"
    assert accumulate(over_socket).tool_calls() == done["tool_calls"]
