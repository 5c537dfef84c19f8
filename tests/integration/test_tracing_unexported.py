"""With no trace exporter (the shared suite has none) spans are not recorded, yet a stream
still gets one trace context that every service carries on."""

from __future__ import annotations

import aiohttp
import redis.asyncio as aioredis

from libs.client.http import SluiceClient
from libs.common.store import StreamStore
from tests.integration.helpers import read_stream, sim


async def test_an_unexported_trace_is_unsampled_but_still_stored_with_the_stream(
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
    version, trace_id, span_id, flags = meta.traceparent.split("-")
    assert version == "00" and int(trace_id, 16) and int(span_id, 16)
    assert not int(flags, 16) & 1, "sampled out: no span was recorded, as none would be exported"
