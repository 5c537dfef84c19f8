"""Every body up to SLUICE_MAX_BODY_BYTES works, whatever pieces it arrives in."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import aiohttp
import msgspec
import pytest
import redis

from libs.client.http import SluiceClient
from libs.common import names
from libs.common.settings import load_settings
from libs.tools.stack import Stack
from services.runner.backends.sim import sim_tokens
from tests.integration.helpers import final, read_stream, sim, text

LIMIT = load_settings({}).max_body_bytes
TOKENS = 5


def body_of(size: int) -> tuple[str, bytes]:
    """A stream request of exactly ``size`` bytes, and its prompt."""
    frame = msgspec.json.encode({"prompt": "", "sim": sim(tokens=TOKENS)})
    prompt = "word " * ((size - len(frame)) // 5)
    prompt += "x" * (size - len(frame) - len(prompt))
    body = msgspec.json.encode({"prompt": prompt, "sim": sim(tokens=TOKENS)})
    assert len(body) == size
    return prompt, body


async def in_pieces(body: bytes, piece: int = 16_384) -> AsyncIterator[bytes]:
    for start in range(0, len(body), piece):
        yield body[start : start + piece]


@pytest.mark.parametrize("size", [LIMIT // 2, int(LIMIT * 0.9), LIMIT])
@pytest.mark.parametrize("chunked", [False, True])
async def test_a_valid_large_request_streams_its_own_answer(
    client: SluiceClient, session: aiohttp.ClientSession, stack: Stack, size: int, chunked: bool
) -> None:
    prompt, body = body_of(size)
    data = in_pieces(body) if chunked else body
    async with session.post(
        f"{stack.gateway}/v1/streams", data=data, headers={"Content-Type": "application/json"}
    ) as answer:
        assert answer.status == 201, await answer.text()
        created = await answer.json()
    received = await read_stream(session, created["events_url"])
    assert final(received).type == "done"
    assert text(received) == "".join(itertools.islice(sim_tokens(prompt, 0), TOKENS))
    with redis.Redis.from_url(stack.redis_url) as r:
        assert not r.exists(names.prompt_key(created["id"]))


async def test_one_byte_past_the_limit_is_413(client: SluiceClient) -> None:
    _, body = body_of(LIMIT + 1)
    status, answer = await client.create_raw(body)
    assert status == 413 and answer["error"]["type"] == "too_large"


async def test_a_large_chat_completion_is_answered(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    content = "word " * 180_000
    request = {"model": "sim", "messages": [{"role": "user", "content": content}], "sim": sim(3)}
    async with session.post(f"{stack.streamer}/v1/chat/completions", json=request) as answer:
        assert answer.status == 200, await answer.text()
        completion = await answer.json()
    expected = "".join(itertools.islice(sim_tokens(f"user: {content}", 0), 3))
    assert completion["choices"][0]["message"]["content"] == expected
