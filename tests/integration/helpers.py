"""What the end-to-end tests share: reading a whole stream the way a client does."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from libs.client.http import Received, events

TIMEOUT_S = 30.0


async def read_stream(
    session: aiohttp.ClientSession,
    url: str,
    last_event_id: str | None = None,
    timeout_s: float = TIMEOUT_S,
) -> list[Received]:
    """Every event until the server closes the stream."""

    async def collect() -> list[Received]:
        return [event async for event in events(session, url, last_event_id)]

    return await asyncio.wait_for(collect(), timeout_s)


def tokens(received: list[Received]) -> list[dict[str, Any]]:
    return [r.json() for r in received if r.type == "token"]


def text(received: list[Received]) -> str:
    return "".join(t["text"] for t in tokens(received))


def final(received: list[Received]) -> Received:
    return received[-1]


def sim(
    tokens: int = 20, tokens_per_s: float = 200, ttft_ms: int = 20, seed: int = 0
) -> dict[str, Any]:
    return {"tokens": tokens, "tokens_per_s": tokens_per_s, "ttft_ms": ttft_ms, "seed": seed}


async def metric(
    session: aiohttp.ClientSession, service_url: str, name: str, **labels: str
) -> float:
    """The sum of a service's ``/metrics`` samples named ``name`` whose labels include ``labels``."""
    async with session.get(service_url + "/metrics") as response:
        body = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def read_until_tokens(
    session: aiohttp.ClientSession,
    url: str,
    count: int,
    received: list[Received],
    timeout_s: float = 15.0,
) -> asyncio.Task[None]:
    """Follow ``url`` in a task into ``received``; return once ``count`` tokens arrived."""
    enough = asyncio.Event()

    async def follow() -> None:
        async for event in events(session, url):
            received.append(event)
            if sum(t["n"] for t in tokens(received)) >= count:
                enough.set()
        enough.set()

    task = asyncio.create_task(follow())
    await asyncio.wait_for(enough.wait(), timeout_s)
    return task
