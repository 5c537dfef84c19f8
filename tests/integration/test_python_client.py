"""The public Python client: whole answers, resume after a dropped connection, cancel, feedback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from itertools import islice

import pytest

from libs.client import (
    Client,
    ControlError,
    Done,
    Reconnecting,
    Status,
    StreamFailed,
    SyncClient,
    Token,
)
from libs.tools.stack import Stack
from services.runner.backends.sim import sim_tokens
from tests.netcut import CuttableLink


def expected(prompt: str, tokens: int) -> str:
    return "".join(islice(sim_tokens(prompt, 0), tokens))


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[Client]:
    async with Client(stack.gateway) as sluice:
        yield sluice


async def test_ask_returns_the_whole_answer(client: Client) -> None:
    answer = await client.ask("what is a river", sim={"tokens": 40, "ttft_ms": 0})
    assert answer == expected("what is a river", 40)


async def test_events_are_status_then_tokens_then_done(client: Client) -> None:
    stream = await client.create("order", sim={"tokens": 10, "tokens_per_s": 500})
    seen = [event async for event in stream.events()]
    assert isinstance(seen[0], Status)
    assert isinstance(seen[-1], Done) and seen[-1].tokens == 10
    first_token = next(i for i, event in enumerate(seen) if isinstance(event, Token))
    assert all(isinstance(event, Status) for event in seen[:first_token])
    later = [event.status for event in seen[first_token:] if isinstance(event, Status)]
    assert "queued" not in later
    assert all(t.channel == "text" for t in seen if isinstance(t, Token))


async def test_a_dropped_connection_is_resumed_and_the_text_comes_out_once(
    client: Client, stack: Stack
) -> None:
    link = await CuttableLink(stack.first("streamer").port).start()
    try:
        stream = await client.create("resume me", sim={"tokens": 120, "tokens_per_s": 60})
        stream.events_url = stream.events_url.replace(stack.streamer, link.url)
        texts: list[str] = []
        reconnects: list[Reconnecting] = []
        async with asyncio.timeout(30):
            async for event in stream.events():
                if isinstance(event, Token):
                    texts.append(event.text)
                    if len(texts) == 20:
                        cut_after = event.seq
                        link.cut()
                        link.restore()
                elif isinstance(event, Reconnecting):
                    reconnects.append(event)
        assert reconnects and reconnects[0].after == cut_after
        assert "".join(texts) == expected("resume me", 120)
        assert stream.done is not None and stream.done.finish_reason == "stop"
    finally:
        await link.stop()


async def test_cancel_over_the_control_socket_ends_the_stream(client: Client) -> None:
    stream = await client.create("stop me", sim={"tokens": 2000, "tokens_per_s": 50})
    async with asyncio.timeout(30):
        async for event in stream.events():
            if isinstance(event, Token):
                ack = await stream.cancel()
                assert ack["type"] == "ack"
                break
        async for _ in stream.events():
            pass
    assert stream.done is not None and stream.done.finish_reason == "cancelled"
    assert stream.done.tokens < 2000


async def test_feedback_is_acknowledged_and_a_bad_rating_refused(client: Client) -> None:
    stream = await client.create("rate me", sim={"tokens": 3, "ttft_ms": 0})
    await stream.text()
    assert (await stream.feedback(1, "good"))["type"] == "ack"
    with pytest.raises(ControlError) as refused:
        await stream.feedback(5)
    assert refused.value.type == "invalid_request"


async def test_a_refused_request_raises_with_the_contract_error(client: Client) -> None:
    with pytest.raises(StreamFailed) as failed:
        await client.create("x", max_tokens=0)
    assert failed.value.type == "invalid_request"


async def test_the_sync_client_answers_without_an_event_loop(stack: Stack) -> None:
    def ask() -> str:
        with SyncClient(stack.gateway) as sluice:
            return sluice.ask("sync", sim={"tokens": 15, "ttft_ms": 0})

    assert await asyncio.to_thread(ask) == expected("sync", 15)
