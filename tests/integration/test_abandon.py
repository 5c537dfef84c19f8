"""Abandon: a stream no one reads stops the model; a reader who comes back in time loses nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import msgspec

from libs.client.http import Received, SluiceClient, events
from libs.tools.stack import Stack
from tests.integration.helpers import final, read_stream, sim, text, tokens

TIMEOUT_S = 20.0
FINAL = {"completed", "cancelled", "superseded", "abandoned", "failed"}
LONG = sim(tokens=2000, tokens_per_s=50, ttft_ms=20)


async def submit_and_watch(
    session: aiohttp.ClientSession, stack: Stack, **body: Any
) -> tuple[dict[str, Any], asyncio.Task[list[str]]]:
    """Submit over the control socket; the task returns the stream's statuses up to its end."""
    ws = await session.ws_connect(f"{stack.gateway}/v1/control")
    await ws.send_str(msgspec.json.encode({"type": "submit", "ref": "s", **body}).decode())
    ack = await ws.receive_json(timeout=TIMEOUT_S)
    assert ack["type"] == "ack", ack

    async def statuses() -> list[str]:
        seen: list[str] = []
        try:
            while not FINAL & set(seen):
                frame = await ws.receive_json(timeout=TIMEOUT_S)
                if frame["type"] == "status" and frame["stream_id"] == ack["stream_id"]:
                    seen.append(frame["status"])
        finally:
            await ws.close()
        return seen

    return ack, asyncio.create_task(statuses())


async def read_tokens_then_leave(
    session: aiohttp.ClientSession, url: str, count: int, last_event_id: str | None = None
) -> list[Received]:
    """Read until ``count`` tokens arrived, then drop the connection."""
    received: list[Received] = []
    async for event in events(session, url, last_event_id):
        received.append(event)
        if sum(t["n"] for t in tokens(received)) >= count:
            break
    return received


async def test_a_stream_no_one_reads_is_abandoned_within_the_window_plus_one_second(
    client: SluiceClient, session: aiohttp.ClientSession, stack: Stack
) -> None:
    ack, watch = await submit_and_watch(
        session, stack, prompt="closed tab", abandon_after_s=1, sim=LONG
    )
    statuses = await asyncio.wait_for(watch, TIMEOUT_S)

    assert statuses[-1] == "abandoned"
    _, info = await client.get(ack["stream_id"])
    ran_s = info["finished_at"] - info["started_at"]
    print(f"\nunread stream, abandon_after_s=1: stopped {ran_s:.3f} s after it started; {info}")
    assert info["status"] == "abandoned" and info["finish_reason"] == "abandoned"
    assert 1.0 <= ran_s < 1.0 + 1.0
    assert 0 < info["tokens"] < 2000
    assert info["tokens_unread"] == info["tokens"], "no one read a single token live"
    assert info["tokens_after_cancel"] == 0
    received = await read_stream(session, ack["events_url"])
    assert final(received).json()["finish_reason"] == "abandoned"
    assert len(text(received).split()) == info["tokens"]


async def test_a_reader_who_leaves_for_good_lets_the_stream_be_abandoned(
    client: SluiceClient, session: aiohttp.ClientSession, stack: Stack
) -> None:
    ack, watch = await submit_and_watch(
        session, stack, prompt="gone", abandon_after_s=1.5, sim=LONG
    )
    read = await read_tokens_then_leave(session, ack["events_url"], 10)
    left_ns = time.time_ns()
    statuses = await asyncio.wait_for(watch, TIMEOUT_S)

    assert statuses[-1] == "abandoned"
    _, info = await client.get(ack["stream_id"])
    after_s = info["finished_at"] - left_ns / 1e9
    print(f"\nreader left; abandon_after_s=1.5: stopped {after_s:.3f} s later; {info}")
    assert 1.5 <= after_s < 1.5 + 1.0
    unread_expected = info["tokens"] - sum(t["n"] for t in tokens(read))
    assert abs(info["tokens_unread"] - unread_expected) <= 3, "waste is what came after leaving"


async def test_a_reader_who_stays_keeps_the_stream_alive_even_with_a_window_under_a_lease(
    session: aiohttp.ClientSession, stack: Stack
) -> None:
    """Leases come once a second; a reader is not taken for gone between two of them."""
    body = sim(tokens=150, tokens_per_s=50, ttft_ms=20)
    ack, watch = await submit_and_watch(
        session, stack, prompt="watched", abandon_after_s=0.5, sim=body
    )
    received = await read_stream(session, ack["events_url"])

    assert final(received).json()["finish_reason"] == "stop"
    assert await asyncio.wait_for(watch, TIMEOUT_S) == ["queued", "running", "completed"]


async def test_a_reader_who_drops_and_returns_in_time_loses_nothing(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    body = sim(tokens=80, tokens_per_s=40, ttft_ms=20, seed=3)
    created = await client.create(prompt="flaky network", abandon_after_s=3, sim=body)
    reference = await client.create(prompt="flaky network", abandon_after_s=3, sim=body)
    whole = asyncio.create_task(read_stream(session, reference["events_url"]))
    before = await read_tokens_then_leave(session, created["events_url"], 10)
    last_seen = before[-1].event.last_event_id
    await asyncio.sleep(1.5)  # away, but for less than abandon_after_s
    after = await read_stream(session, created["events_url"], last_event_id=last_seen)

    assert final(after).json()["finish_reason"] == "stop"
    assert final(after).json()["tokens"] == 80
    resumed = tokens(after)
    assert resumed[0]["seq"] - resumed[0]["n"] + 1 == int(last_seen) + 1, "nothing skipped"
    assert text(before) + text(after) == text(await asyncio.wait_for(whole, TIMEOUT_S))
    _, info = await client.get(created["id"])
    assert info["status"] == "completed"
