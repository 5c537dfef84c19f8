"""With no trace exporter (the shared suite has none) streams are not traced at all: no
span is opened, no trace context rides in NATS headers or sits in the meta."""

from __future__ import annotations

import aiohttp
import redis.asyncio as aioredis

from libs.client.http import SluiceClient
from libs.common.store import StreamStore
from tests.integration.helpers import read_stream, sim


async def test_an_unexported_stream_carries_no_trace_context(
    session: aiohttp.ClientSession, client: SluiceClient, servers: tuple[str, str]
) -> None:
    created = await client.create(prompt="no exporter", sim=sim(tokens=3))
    received = await read_stream(session, created["events_url"])
    assert received[-1].type == "done"
    redis = aioredis.Redis.from_url(servers[1])
    try:
        meta = await StreamStore(redis, ttl_s=60, maxlen=100).meta(created["id"])
    finally:
        await redis.aclose()
    assert meta is not None
    assert meta.status == "completed" and meta.tokens == 3
    assert meta.traceparent == "", "a trace context was made although nothing exports it"
