"""Cancel over HTTP: the model stops at once, the ``done`` says what it cost, and waste is counted."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from libs.client.http import Received, SluiceClient
from libs.common import names
from libs.common.wire import Cancel, control_codec
from libs.tools.stack import Stack
from tests.integration.helpers import final, read_stream, read_until_tokens, sim, text, tokens

TIMEOUT_S = 15.0
SLOW = sim(tokens=1000, tokens_per_s=50, ttft_ms=20)


async def wasted(session: aiohttp.ClientSession, stack: Stack, kind: str) -> float:
    """The runner's ``sluice_tokens_wasted_total{kind=...}`` (0 before it first counts)."""
    async with session.get(stack.first("runner").url + "/metrics") as response:
        body = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "sluice_tokens_wasted_total" and sample.labels.get("kind") == kind
    )


async def test_http_cancel_mid_stream_stops_the_model_at_once(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(prompt="cancel me", sim=SLOW)
    received: list[Received] = []
    follower = await read_until_tokens(session, created["events_url"], 10, received)
    cancel_sent = time.monotonic()
    status, answer = await client.cancel(created["id"])
    await asyncio.wait_for(follower, TIMEOUT_S)
    stopped_s = time.monotonic() - cancel_sent

    assert status == 202 and answer["cancel"] == "requested"
    done = final(received)
    assert done.type == "done", received[-1]
    usage = done.json()
    print(f"\nHTTP cancel: done {stopped_s * 1000:.1f} ms after the request; {usage}")
    assert usage["finish_reason"] == "cancelled"
    assert stopped_s < 1.0, "the issue asks for 100 ms; 10x margin on a shared machine"
    assert usage["tokens_after_cancel"] <= 2
    assert 0 <= usage["cancel_to_stop_ms"] < 1000
    assert usage["tokens"] == sum(t["n"] for t in tokens(received)) < 1000
    _, info = await client.get(created["id"])
    assert info["status"] == "cancelled" and info["finish_reason"] == "cancelled"
    assert info["tokens"] == usage["tokens"]
    assert info["tokens_after_cancel"] == usage["tokens_after_cancel"]
    assert info["cancel_to_stop_ms"] == pytest.approx(usage["cancel_to_stop_ms"])


async def test_cancel_twice_answers_202_both_times_and_ends_once(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(prompt="twice", sim=SLOW)
    received: list[Received] = []
    follower = await read_until_tokens(session, created["events_url"], 3, received)
    first, second = await asyncio.gather(client.cancel(created["id"]), client.cancel(created["id"]))
    await asyncio.wait_for(follower, TIMEOUT_S)

    assert first[0] == second[0] == 202
    assert [r.type for r in received].count("done") == 1
    assert final(received).json()["finish_reason"] == "cancelled"
    replay = await read_stream(session, created["events_url"])
    assert text(replay) == text(received) and final(replay).json() == final(received).json()


async def test_cancelling_a_finished_stream_is_202_and_changes_nothing(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(prompt="already done", sim=sim(tokens=5))
    live = await read_stream(session, created["events_url"])
    _, before = await client.get(created["id"])

    status, answer = await client.cancel(created["id"])

    assert status == 202 and answer["status"] == "completed"
    _, after = await client.get(created["id"])
    assert after == before and after["finish_reason"] == "stop"
    replay = await read_stream(session, created["events_url"])
    assert final(replay).json() == final(live).json()


async def test_cancel_of_a_queued_stream_ends_it_with_zero_tokens(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(prompt="never starts", debounce_ms=10_000, sim=SLOW)
    _, queued = await client.get(created["id"])
    assert queued["status"] == "queued"

    status, _ = await client.cancel(created["id"])
    received = await read_stream(session, created["events_url"], timeout_s=TIMEOUT_S)

    assert status == 202
    assert tokens(received) == []
    assert final(received).json() == {
        "finish_reason": "cancelled",
        "tokens": 0,
        "tokens_after_cancel": 0,
    }
    _, info = await client.get(created["id"])
    assert info["status"] == "cancelled" and info["tokens"] == 0
    assert "started_at" not in info, "a queued stream never reaches a runner"


async def test_cancel_of_an_unknown_stream_is_404(client: SluiceClient) -> None:
    status, answer = await client.cancel("st_" + "0" * 32)
    assert status == 404 and answer["error"]["type"] == "not_found"


async def test_a_stream_no_one_reads_counts_every_token_unread(
    client: SluiceClient, session: aiohttp.ClientSession, stack: Stack
) -> None:
    before = await wasted(session, stack, "unread")
    created = await client.create(prompt="nobody listens", sim=sim(tokens=40, tokens_per_s=400))
    info = await wait_final(client, created["id"])

    assert info["status"] == "completed" and info["tokens"] == 40
    assert info["tokens_unread"] == 40
    assert await wasted(session, stack, "unread") - before >= 40, "other tests' streams may add"


async def test_a_stream_read_from_the_start_wastes_nothing(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(prompt="all eyes", sim=sim(tokens=40, tokens_per_s=100))
    received = await read_stream(session, created["events_url"])

    assert final(received).json()["tokens"] == 40
    _, info = await client.get(created["id"])
    assert info["tokens_unread"] == 0
    assert info.get("tokens_after_cancel") is None


async def test_a_reader_waiting_before_the_model_starts_wastes_nothing(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    """The reader's lease went out before any runner held the stream; it still counts."""
    body = sim(tokens=30, tokens_per_s=100)
    created = await client.create(prompt="typing...", debounce_ms=300, sim=body)
    received = await read_stream(session, created["events_url"])

    assert final(received).json()["tokens"] == 30
    _, info = await client.get(created["id"])
    assert info["tokens_unread"] == 0


async def test_tokens_generated_after_a_late_cancel_are_counted_as_waste(
    client: SluiceClient, session: aiohttp.ClientSession, stack: Stack
) -> None:
    """A cancel that took a second to reach the runner: the tokens of that second are waste."""
    before = await wasted(session, stack, "after_cancel")
    created = await client.create(prompt="late cancel", sim=SLOW)
    received: list[Received] = []
    follower = await read_until_tokens(session, created["events_url"], 60, received)
    late = Cancel(reason="cancelled", requested_ns=time.time_ns() - 1_000_000_000)
    nc = await nats.connect(stack.nats_url)
    try:
        subject = names.stream_subject(created["id"], "control")
        await nc.publish(subject, control_codec.encode(late))
        await nc.flush()
    finally:
        await nc.close()
    await asyncio.wait_for(follower, TIMEOUT_S)

    usage = final(received).json()
    assert usage["finish_reason"] == "cancelled"
    assert 40 <= usage["tokens_after_cancel"] <= 60, "50 tokens/s for the cancel's 1 s in flight"
    assert usage["cancel_to_stop_ms"] >= 1000
    after_cancel = await wasted(session, stack, "after_cancel") - before
    assert after_cancel >= usage["tokens_after_cancel"], "other tests' streams may add"


async def wait_final(client: SluiceClient, stream_id: str) -> dict[str, Any]:
    """Poll the status until the stream has ended (reading it would count as a reader)."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        _, info = await client.get(stream_id)
        if info.get("finished_at"):
            return dict(info)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{stream_id} did not end within {TIMEOUT_S}s")
