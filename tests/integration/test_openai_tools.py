"""The official SDK with tools, reasoning and structured output: through sluice as direct.

A scripted upstream streams reasoning, then two tool calls whose argument fragments
interleave. The SDK's accumulated answer through sluice must equal its answer from
the upstream itself, field for field, streamed and not; the answer's own identity
(``id``, ``created``, ``model``) is sluice's stream, so it is left out.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import openai
import pydantic
import pytest
from openai.types.chat import ChatCompletion

from libs.client.http import Received, SluiceClient, events
from libs.tools.stack import Stack
from tests.conftest import stack_with_models
from tests.integration.channel_reading import accumulate
from tests.integration.helpers import final, metric, read_stream
from tests.integration.scripted_upstream import (
    INTERLEAVED_CALLS,
    PARALLEL_CALLS,
    STRUCTURED,
    ScriptedUpstream,
    serve_upstream,
)

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ASK: Any = [{"role": "user", "content": "Weather in Paris and Oslo?"}]
USAGE: Any = {"include_usage": True}
USAGE_METRIC = "sluice_model_usage_tokens_total"


class Forecast(pydantic.BaseModel):
    city: str
    celsius: float


class GetWeather(pydantic.BaseModel):
    city: str


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    async for served in serve_upstream():
        yield served


@pytest.fixture(scope="module")
def scripted_stack(
    upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    models = {"scripted": {"base_url": upstream.url, "upstream_model": "up-1"}}
    with stack_with_models(tmp_path_factory.mktemp("scripted"), models) as suite:
        yield suite


Routes = list[tuple[openai.AsyncOpenAI, str]]


@pytest.fixture
async def routes(upstream: ScriptedUpstream, scripted_stack: Stack) -> AsyncIterator[Routes]:
    """The SDK and the model name to ask for: the upstream directly, then through sluice."""
    upstream.script = PARALLEL_CALLS
    direct = openai.AsyncOpenAI(base_url=upstream.url, api_key="x", max_retries=0)
    through = openai.AsyncOpenAI(
        base_url=f"{scripted_stack.streamer}/v1", api_key="x", max_retries=0
    )
    async with direct, through:
        yield [(direct, "up-1"), (through, "scripted")]


def answer(completion: ChatCompletion) -> tuple[Any, Any]:
    """What a completion says, without its identity: the choices and the usage."""
    usage = completion.usage.model_dump() if completion.usage else None
    return [choice.model_dump(warnings=False) for choice in completion.choices], usage


async def test_a_streamed_answer_with_reasoning_and_parallel_tool_calls_equals_the_upstreams(
    routes: Routes, upstream: ScriptedUpstream
) -> None:
    upstream.script = INTERLEAVED_CALLS
    finals = []
    for sdk, model in routes:
        stream = await sdk.chat.completions.create(
            model=model, messages=ASK, tools=[WEATHER_TOOL], stream=True, stream_options=USAGE
        )
        chunks = [chunk async for chunk in stream]
        finals.append(accumulated(chunks))
    direct, through = finals

    assert through == direct
    assert direct["tool_calls"][1] == {
        "id": "call_b",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    assert direct["reasoning_content"] == "Two cities, so two calls."
    assert direct["finish_reason"] == "tool_calls"
    assert direct["usage"]["completion_tokens_details"]["reasoning_tokens"] == 7
    sent_direct, sent_through = upstream.requests[-2:]
    assert sent_through["tools"] == sent_direct["tools"] == [WEATHER_TOOL]


def accumulated(chunks: list[Any]) -> dict[str, Any]:
    """The chunks added up as the SDK's own helpers do, by tool-call index.

    The SDK keeps each streamed call's ``index``, which a whole answer's calls do not
    have (their place in the list is their index); it is dropped to compare the two.
    """
    from openai.lib.streaming.chat._completions import ChatCompletionStreamState

    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(chunk)
    completion = state.get_final_completion()
    message = completion.choices[0].message.model_dump(exclude_none=True)
    for call in message.get("tool_calls", []):
        call.pop("index")
    usage = completion.usage.model_dump(exclude_none=True) if completion.usage else None
    return {**message, "finish_reason": completion.choices[0].finish_reason, "usage": usage}


async def test_a_whole_answer_equals_the_upstreams_and_the_stream_added_up(
    routes: Routes,
) -> None:
    (direct_sdk, _), (sluice_sdk, _) = routes
    direct = await direct_sdk.chat.completions.create(
        model="up-1", messages=ASK, tools=[WEATHER_TOOL]
    )
    through = await sluice_sdk.chat.completions.create(
        model="scripted", messages=ASK, tools=[WEATHER_TOOL]
    )
    stream = await sluice_sdk.chat.completions.create(
        model="scripted", messages=ASK, tools=[WEATHER_TOOL], stream=True, stream_options=USAGE
    )
    streamed = accumulated([chunk async for chunk in stream])

    assert answer(through) == answer(direct)
    whole = {**through.choices[0].message.model_dump(exclude_none=True)}
    assert {**whole, "finish_reason": "tool_calls", "usage": streamed["usage"]} == streamed
    assert through.choices[0].message.content is None


async def test_the_sdks_stream_helper_yields_the_tool_call_events(
    routes: Routes,
) -> None:
    tool = openai.pydantic_function_tool(GetWeather, name="get_weather")
    results = []
    for sdk, model in routes:
        async with sdk.chat.completions.stream(
            model=model, messages=ASK, tools=[tool], stream_options=USAGE
        ) as stream:
            done = [
                (event.index, event.name, event.parsed_arguments)
                async for event in stream
                if event.type == "tool_calls.function.arguments.done"
            ]
            final_completion = await stream.get_final_completion()
        results.append((done, answer(final_completion)))

    assert results[1] == results[0]
    assert results[0][0] == [
        (0, "get_weather", GetWeather(city="Paris")),
        (1, "get_weather", GetWeather(city="Oslo")),
    ]


async def test_parse_with_a_json_schema_response_format_works_through_sluice(
    routes: Routes, upstream: ScriptedUpstream
) -> None:
    upstream.script = STRUCTURED
    parsed = []
    for sdk, model in routes:
        completion = await sdk.chat.completions.parse(
            model=model, messages=ASK, response_format=Forecast
        )
        parsed.append((completion.choices[0].message.parsed, answer(completion)))
        async with sdk.chat.completions.stream(
            model=model, messages=ASK, response_format=Forecast
        ) as stream:
            streamed = await stream.get_final_completion()
        parsed.append((streamed.choices[0].message.parsed, answer(streamed)))

    assert parsed[2:] == parsed[:2]
    assert parsed[0][0] == Forecast(city="Paris", celsius=21.5)
    sent = upstream.requests[-1]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"] == upstream.requests[-3]["response_format"]


async def test_a_reader_cut_mid_tool_call_resumes_to_the_exact_calls(
    scripted_stack: Stack, session: aiohttp.ClientSession, upstream: ScriptedUpstream
) -> None:
    upstream.script = INTERLEAVED_CALLS
    client = SluiceClient(session, scripted_stack.gateway)
    created = await client.create(model="scripted", messages=ASK, tools=[WEATHER_TOOL])
    first: list[Received] = []
    async for event in events(session, created["events_url"]):
        first.append(event)
        if event.type == "token" and event.json().get("channel") == "tool_call":
            break
    rest = await read_stream(session, created["events_url"], first[-1].event.last_event_id)
    whole = await read_stream(session, created["events_url"])

    assert accumulate(first + rest) == accumulate(whole)
    calls = accumulate(whole).tool_calls()
    assert calls == final(rest).json()["tool_calls"]
    assert [json.loads(call["arguments"]) for call in calls] == [
        {"city": "Paris"},
        {"city": "Oslo"},
    ]
    assert accumulate(whole).reasoning == "Two cities, so two calls."
    assert final(whole).json()["reasoning_tokens"] == 7
    runner = scripted_stack.first("runner").url
    deadline = time.monotonic() + 10
    while await metric(session, runner, USAGE_METRIC, model="scripted", kind="reasoning") < 7:
        assert time.monotonic() < deadline, "the upstream's reasoning tokens are not counted"
        await asyncio.sleep(0.05)


async def test_a_field_sluice_neither_honours_nor_passes_is_refused_by_name(
    routes: Routes, upstream: ScriptedUpstream
) -> None:
    sluice_sdk = routes[1][0]
    seen = len(upstream.requests)
    with pytest.raises(openai.BadRequestError) as caught:
        await sluice_sdk.chat.completions.create(
            model="scripted", messages=ASK, logprobs=True, top_logprobs=2
        )
    assert caught.value.status_code == 400
    assert "`logprobs`" in caught.value.message
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "logprobs"
    assert len(upstream.requests) == seen

    await sluice_sdk.chat.completions.create(
        model="scripted",
        messages=ASK,
        user="u-1",
        reasoning_effort="low",
        parallel_tool_calls=False,
        tools=[WEATHER_TOOL],
        tool_choice="required",
    )
    sent = upstream.requests[-1]
    assert sent["user"] == "u-1" and sent["reasoning_effort"] == "low"
    assert sent["parallel_tool_calls"] is False and sent["tool_choice"] == "required"
