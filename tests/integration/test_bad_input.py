"""Bad input gets a clear JSON error and changes nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import redis

from libs.client.http import SluiceClient, StreamRefused, events
from libs.common.auth import mint_read_token, new_stream_id
from libs.tools.stack import Stack
from tests.conftest import FAST_ENV
from tests.integration.helpers import read_stream, sim

SECRET = FAST_ENV["SLUICE_SECRET"].encode()


def meta_keys(stack: Stack) -> int:
    with redis.Redis.from_url(stack.redis_url) as r:
        return len(list(r.scan_iter("sluice:meta:*", count=1000)))


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "malformed"),
        (b'{"prompt": 42}', "at `$.prompt`"),
        (b'{"model": "sim"}', "exactly one of `prompt` and `messages`"),
        (b'{"prompt": "x", "messages": [{"role": "user", "content": "y"}]}', "exactly one"),
        (b'{"prompt": "x", "max_tokens": 0}', "`$.max_tokens`"),
        (b'{"prompt": "x", "max_tokens": 99999999}', "`$.max_tokens`"),
        (b'{"prompt": "x", "model": "gpt-nope"}', "unknown model"),
        (b'{"prompt": "x", "sim": {"tokens_per_s": -1}}', "`$.sim.tokens_per_s`"),
        (b'{"prompt": "x", "surprise": 1}', "unknown field `surprise`"),
        (b"[]", "Expected `object`"),
    ],
)
async def test_bad_request_is_a_400_json_error_and_starts_nothing(
    client: SluiceClient, stack: Stack, body: bytes, fragment: str
) -> None:
    before = meta_keys(stack)
    status, answer = await client.create_raw(body)
    assert status == 400
    assert answer["error"]["type"] == "invalid_request"
    assert fragment in answer["error"]["message"]
    assert meta_keys(stack) == before


async def test_oversized_body_is_413_and_starts_nothing(client: SluiceClient, stack: Stack) -> None:
    before = meta_keys(stack)
    body = b'{"prompt": "' + b"x" * 2_000_000 + b'"}'
    status, answer = await client.create_raw(body)
    assert status == 413 and answer["error"]["type"] == "too_large"
    assert meta_keys(stack) == before


async def test_unknown_stream_is_404_at_the_gateway(client: SluiceClient) -> None:
    for stream_id in (new_stream_id(), "not-an-id"):
        status, answer = await client.get(stream_id)
        assert status == 404 and answer["error"]["type"] == "not_found"
        status, answer = await client.cancel(stream_id)
        assert status == 404 and answer["error"]["type"] == "not_found"


async def test_unknown_route_is_a_json_404(stack: Stack, session: aiohttp.ClientSession) -> None:
    async with session.get(stack.gateway + "/v1/nothing") as response:
        assert response.status == 404
        assert (await response.json())["error"]["type"] == "not_found"


async def _refusal(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    with pytest.raises(StreamRefused) as refused:
        async for _ in events(session, url):
            pass
    return refused.value.status, refused.value.json()


async def test_bad_read_token_looks_the_same_for_real_and_unknown_streams(
    client: SluiceClient, stack: Stack, session: aiohttp.ClientSession
) -> None:
    created = await client.create(prompt="secret", sim=sim(tokens=3))
    await read_stream(session, created["events_url"])
    real, unknown = created["id"], new_stream_id()
    cases: dict[str, Callable[[str], str]] = {
        "missing": lambda sid: "",
        "garbage": lambda sid: "abc",
        "wrong signature": lambda sid: mint_read_token(b"other-secret", sid, 60),
        "expired": lambda sid: mint_read_token(SECRET, sid, -10),
        "other stream": lambda sid: (
            created["token"] if sid != real else mint_read_token(SECRET, unknown, 60)
        ),
    }
    for name, token_for in cases.items():
        answers = []
        for stream_id in (real, unknown):
            url = f"{stack.streamer}/v1/streams/{stream_id}/events?token={token_for(stream_id)}"
            answers.append(await _refusal(session, url))
        assert answers[0] == answers[1], name
        assert answers[0][0] in (401, 403), name


async def test_bad_last_event_id_is_400(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(prompt="x", sim=sim(tokens=2))
    status, body = await _refusal(session, created["events_url"] + "&last_event_id=abc")
    assert status == 400 and body["error"]["type"] == "invalid_request"

    assert time.time() > 0
