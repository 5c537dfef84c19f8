"""Log before publish: a batch a reader can see live is already in the stream's log.

Readers repair gaps from the log, so a publish that overtook its append would break
nothing visible while Redis answers quickly. Pausing Redis writes mid-stream opens the
window wide: every batch seen on the stream's NATS subject must be logged already.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import nats
import redis.asyncio as aioredis

from libs.client.http import SluiceClient
from libs.common import names
from libs.common.store import StreamStore
from libs.common.wire import TokenBatch, tokens_codec
from tests.integration.helpers import sim

TIMEOUT_S = 30.0
TOKENS = 300
PAUSE_MS = 1000


async def test_every_published_batch_is_logged_even_while_redis_writes_stall(
    client: SluiceClient, servers: tuple[str, str], redis: aioredis.Redis
) -> None:
    store = StreamStore(redis, ttl_s=60, maxlen=10_000)
    nc = await nats.connect(servers[0])
    try:
        live = await nc.subscribe(names.stream_subject("*", "tokens"))
        created = await client.create(
            prompt="log first",
            max_tokens=TOKENS,
            sim=sim(tokens=TOKENS, tokens_per_s=200, ttft_ms=20),
        )
        subject = names.stream_subject(created["id"], "tokens")
        seen: list[tuple[int, int]] = []  # (last token of a batch, tokens logged when it arrived)
        arrivals: list[float] = []
        paused_at = 0.0
        async with asyncio.timeout(TIMEOUT_S):
            async for msg in live.messages:
                message = tokens_codec.decode(msg.data)
                if msg.subject != subject:
                    continue
                if not isinstance(message, TokenBatch):
                    break
                seen.append((message.last, await store.logged_tokens(created["id"])))
                arrivals.append(time.monotonic())
                if not paused_at and message.last >= 20:
                    await redis.client_pause(PAUSE_MS, all=False)  # writes only
                    paused_at = time.monotonic()
    finally:
        await nc.close()

    assert seen[-1][0] == TOKENS, "the whole stream was seen live"
    published_first = [(last, logged) for last, logged in seen if logged < last]
    assert not published_first, f"batches published before they were logged: {published_first}"
    held = max(b - a for a, b in itertools.pairwise(arrivals) if a >= paused_at - 0.1)
    assert held >= PAUSE_MS / 2000, f"the pause held the stream's commits only {held:.3f} s"
