"""The OpenAI-compatible endpoint, driven by the official ``openai`` SDK, unchanged."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from libs.client.http import SluiceClient
from libs.common.sse import SSEParser
from libs.tools.stack import Stack
from tests.integration.helpers import read_stream, sim, text

TIMEOUT_S = 30.0


@pytest.fixture
async def sdk(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(
        base_url=f"{stack.streamer}/v1", api_key="unused", max_retries=0, timeout=TIMEOUT_S
    )
    yield client
    await client.close()


def messages(content: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": content}]


async def native_text(
    client: SluiceClient, session: aiohttp.ClientSession, content: str, shape: dict[str, Any]
) -> str:
    created = await client.create(messages=messages(content), sim=shape)
    return text(await read_stream(session, created["events_url"]))


async def final_info(client: SluiceClient, stream_id: str, timeout_s: float) -> dict[str, Any]:
    """The stream's status once it has ended, polling the gateway."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, info = await client.get(stream_id)
        assert status == 200, info
        if info["status"] not in ("queued", "running"):
            return dict(info)
        await asyncio.sleep(0.1)
    raise AssertionError(f"stream {stream_id} still running after {timeout_s}s")


async def test_sdk_streams_role_content_finish_and_usage_chunks_then_done(
    sdk: openai.AsyncOpenAI, client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    shape = sim(tokens=20)
    stream = await sdk.chat.completions.create(
        model="sim",
        messages=messages("chat stream"),
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"sim": shape},
    )
    chunks = [chunk async for chunk in stream]

    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == await native_text(client, session, "chat stream", shape)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 20
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("st_")


async def test_sdk_non_stream_gets_one_completion_with_the_stream_id_header(
    sdk: openai.AsyncOpenAI, client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    shape = sim(tokens=12)
    raw = await sdk.chat.completions.with_raw_response.create(
        model="sim",
        messages=messages("chat once"),
        max_completion_tokens=10,
        extra_body={"sim": shape},
    )
    completion = raw.parse()

    assert completion.object == "chat.completion" and completion.model == "sim"
    choice = completion.choices[0]
    assert choice.finish_reason == "length" and choice.message.role == "assistant"
    full = await native_text(client, session, "chat once", shape)
    assert full.startswith(choice.message.content or "") and choice.message.content
    assert completion.usage is not None and completion.usage.completion_tokens == 10
    stream_id = raw.headers["X-Sluice-Stream-Id"]
    assert stream_id == completion.id
    info = await final_info(client, stream_id, 5)
    assert info["status"] == "completed" and info["tokens"] == 10


async def test_closing_the_sdk_stream_mid_answer_abandons_the_generation(
    sdk: openai.AsyncOpenAI, client: SluiceClient
) -> None:
    raw = await sdk.chat.completions.with_raw_response.create(
        model="sim",
        messages=messages("walk away"),
        stream=True,
        extra_body={"sim": sim(tokens=400, tokens_per_s=40)},
    )
    stream_id = raw.headers["X-Sluice-Stream-Id"]
    stream = raw.parse()
    pieces = 0
    async for chunk in stream:
        pieces += bool(chunk.choices and chunk.choices[0].delta.content)
        if pieces == 5:
            break
    await stream.close()
    closed = time.monotonic()

    info = await final_info(client, stream_id, 20)
    waited = time.monotonic() - closed
    assert info["status"] == "abandoned" and info["finish_reason"] == "abandoned"
    assert info["tokens"] < 400, "the generation stopped early"
    assert 2.0 < waited < 15.0, f"abandoned {waited:.1f}s after the close (default window 5 s)"


async def test_a_lost_chat_stream_resumes_on_the_native_endpoint(
    stack: Stack, session: aiohttp.ClientSession, client: SluiceClient
) -> None:
    shape = sim(tokens=40, tokens_per_s=100)
    body = {"model": "sim", "messages": messages("resume me"), "stream": True, "sim": shape}
    async with session.post(f"{stack.streamer}/v1/chat/completions", json=body) as response:
        stream_id = response.headers["X-Sluice-Stream-Id"]
        token = response.headers["X-Sluice-Read-Token"]
        parser, seen = SSEParser(), ""
        async for chunk in response.content.iter_any():
            events = parser.feed(chunk)
            seen += "".join(e.json()["choices"][0]["delta"].get("content", "") for e in events)
            if parser.last_event_id and int(parser.last_event_id) >= 5:
                break
    url = f"{stack.streamer}/v1/streams/{stream_id}/events?token={token}"
    rest = await read_stream(session, url, last_event_id=parser.last_event_id)

    assert seen + text(rest) == await native_text(client, session, "resume me", shape)
    assert rest[-1].type == "done" and rest[-1].json()["tokens"] == 40


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"model": "gpt-nope", "messages": messages("x")}, None, "unknown model"),
        ({"model": "sim", "messages": messages("x"), "max_tokens": 0}, "max_tokens", ">= 1"),
        ({"model": "sim", "messages": messages("x"), "n": 2}, "n", "<= 1"),
        ({"model": "sim", "messages": []}, "messages", "length >= 1"),
        ({"model": "sim"}, None, "missing required field `messages`"),
        ({"model": "sim", "messages": messages("x"), "sim": {"tokens": -1}}, "sim", ">= 0"),
    ],
)
async def test_bad_chat_request_is_an_openai_shaped_400(
    stack: Stack,
    session: aiohttp.ClientSession,
    body: dict[str, Any],
    param: str | None,
    fragment: str,
) -> None:
    async with session.post(f"{stack.streamer}/v1/chat/completions", json=body) as response:
        assert response.status == 400
        assert "X-Sluice-Stream-Id" not in response.headers
        error = (await response.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request" and error["param"] == param
    assert fragment in error["message"]


async def test_sdk_raises_its_own_error_class_for_a_sluice_error(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.chat.completions.create(model="gpt-nope", messages=messages("x"))
    assert caught.value.status_code == 400
    assert isinstance(caught.value.body, dict) and caught.value.body["type"] == "invalid_request"
    assert "unknown model 'gpt-nope'" in caught.value.message


async def test_models_lists_the_configured_models(sdk: openai.AsyncOpenAI) -> None:
    page = await sdk.models.list()
    assert "sim" in [model.id for model in page.data]
    assert all(model.object == "model" for model in page.data)
