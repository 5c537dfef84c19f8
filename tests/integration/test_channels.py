"""Reasoning and tool calls through the native API, from the simulated model.

Every channel is numbered, logged and resumed like text: a reader cut mid-tool-call
that resumes with Last-Event-ID adds up the same call, and ``done`` carries the
finished calls as complete JSON.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import openai
import pydantic
import pytest

from libs.client.http import Received, SluiceClient, events
from libs.tools.stack import Stack
from tests.integration.channel_reading import accumulate
from tests.integration.helpers import final, read_stream, sim, text, tokens

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "units": {"type": "string", "enum": ["metric", "imperial"]},
                "hourly": {"type": "boolean"},
            },
            "required": ["city", "days", "units", "hourly"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "clock", "parameters": {"type": "object"}}}


def ask(prompt: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}], **fields}


async def test_sim_answers_tools_with_a_call_streamed_in_fragments(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(**ask("weather?", tools=[WEATHER, CLOCK], sim=sim(seed=3)))
    received = await read_stream(session, created["events_url"])

    fragments = [t for t in tokens(received) if t.get("channel") == "tool_call"]
    assert len(fragments) > 3 and len(fragments) == len(tokens(received))
    done = final(received).json()
    assert done["finish_reason"] == "tool_calls"
    assert done["tokens"] == sum(t["n"] for t in fragments)
    [call] = done["tool_calls"]
    assert call["name"] == "get_weather" and call["id"].startswith("call_")
    assert accumulate(received).tool_calls() == done["tool_calls"]
    assert set(json.loads(call["arguments"])) == {"city", "days", "units", "hourly"}


async def test_sim_tool_arguments_fit_the_named_functions_schema_and_repeat_per_seed(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    body = ask("weather?", tools=[CLOCK, WEATHER], tool_choice=choice, sim=sim(seed=5))
    answers = []
    for _ in range(2):
        created = await client.create(**body)
        answers.append(final(await read_stream(session, created["events_url"])).json())

    assert answers[0]["tool_calls"] == answers[1]["tool_calls"]
    arguments = json.loads(answers[0]["tool_calls"][0]["arguments"])
    assert set(arguments) == {"city", "days", "units", "hourly"}
    assert isinstance(arguments["city"], str) and 1 <= arguments["days"] <= 7
    assert arguments["units"] in ("metric", "imperial") and isinstance(arguments["hourly"], bool)


async def test_sim_streams_reasoning_first_then_the_same_text(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    plain = await client.create(**ask("think", sim=sim(tokens=12, seed=2)))
    thinking = await client.create(
        **ask("think", sim={**sim(tokens=12, seed=2), "reasoning_tokens": 6})
    )
    without, with_reasoning = [
        await read_stream(session, created["events_url"]) for created in (plain, thinking)
    ]

    channels = [t.get("channel") for t in tokens(with_reasoning)]
    assert channels[0] == "reasoning" and "reasoning" not in channels[channels.index(None) :]
    answer = accumulate(with_reasoning)
    assert answer.text == text(without) and answer.reasoning
    assert all("channel" not in t for t in tokens(without))
    done = final(with_reasoning).json()
    assert done["reasoning_tokens"] == 6 and done["tokens"] == 18
    assert "reasoning_tokens" not in final(without).json()


async def test_a_reader_cut_mid_tool_call_resumes_to_the_exact_call(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    shape = {**sim(tokens_per_s=60, seed=9), "reasoning_tokens": 4}
    created = await client.create(**ask("cut me", tools=[WEATHER], sim=shape))
    first: list[Received] = []
    async for event in events(session, created["events_url"]):
        first.append(event)
        if sum(t.get("channel") == "tool_call" for t in tokens(first)) >= 3:
            break
    rest = await read_stream(session, created["events_url"], first[-1].event.last_event_id)
    whole = await read_stream(session, created["events_url"])

    seqs = [t["seq"] for t in tokens(first + rest)]
    assert seqs == sorted(set(seqs)) and final(rest).type == "done"
    assert final(rest).json()["finish_reason"] == "tool_calls"
    resumed, straight = accumulate(first + rest), accumulate(whole)
    assert resumed == straight and resumed.reasoning
    assert resumed.tool_calls() == final(rest).json()["tool_calls"]
    json.loads(resumed.tool_calls()[0]["arguments"])


async def test_a_cancel_mid_tool_call_ends_without_a_half_call(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    shape = {**sim(tokens_per_s=20, seed=4), "reasoning_tokens": 2}
    created = await client.create(**ask("stop me", tools=[WEATHER], sim=shape))
    received: list[Received] = []
    status = 0
    async for event in events(session, created["events_url"]):
        received.append(event)
        if not status and event.type == "token" and event.json().get("channel") == "tool_call":
            status, _ = await client.cancel(created["id"])
    assert status == 202

    done = final(received).json()
    assert done["finish_reason"] == "cancelled" and "tool_calls" not in done
    assert done["tokens"] == sum(t["n"] for t in tokens(received))


async def test_a_conversation_with_tool_calls_and_results_is_accepted(
    client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "clock", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "time?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
    ]
    created = await client.create(messages=messages, tools=[CLOCK], tool_choice="none", sim=sim())
    received = await read_stream(session, created["events_url"])
    assert final(received).json()["finish_reason"] == "length" or text(received)
    assert "tool_calls" not in final(received).json()


class Forecast(pydantic.BaseModel):
    city: str
    days: int
    hourly: bool


async def test_the_sdk_parses_the_sims_json_answer_and_runs_an_agent_loop(stack: Stack) -> None:
    async with openai.AsyncOpenAI(base_url=f"{stack.streamer}/v1", api_key="x") as sdk:
        parsed = await sdk.chat.completions.parse(
            model="sim", messages=ask("forecast")["messages"], response_format=Forecast
        )
        assert isinstance(parsed.choices[0].message.parsed, Forecast)
        async with sdk.chat.completions.stream(
            model="sim", messages=ask("weather?")["messages"], tools=[WEATHER]
        ) as stream:
            asked = await stream.get_final_completion()
        message = asked.choices[0].message
        assert asked.choices[0].finish_reason == "tool_calls" and message.tool_calls
        [call] = message.tool_calls
        assert json.loads(call.function.arguments)["units"] in ("metric", "imperial")
        conversation: Any = [
            *ask("weather?")["messages"],
            message.model_dump(),  # as agents send it back, a streamed call's index too
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ]
        answered = await sdk.chat.completions.create(
            model="sim",
            messages=conversation,
            tools=[WEATHER],
            tool_choice="none",
        )
    assert answered.choices[0].message.content and not answered.choices[0].message.tool_calls


BAD = {
    "choice not in tools": (
        ask("x", tools=[CLOCK], tool_choice={"type": "function", "function": {"name": "nope"}}),
        "names 'nope', not in `tools`",
    ),
    "required without tools": (ask("x", tool_choice="required"), "no `tools`"),
    "bad function name": (
        ask("x", tools=[{"type": "function", "function": {"name": "has space"}}]),
        "`$.tools[0].function.name`",
    ),
    "twice": (ask("x", tools=[CLOCK, CLOCK]), "names a function twice"),
    "tool message without id": (
        {"messages": [{"role": "tool", "content": "12:00"}]},
        "`tool_call_id` is required",
    ),
    "assistant without content": (
        {"messages": [{"role": "assistant"}]},
        "`content` is required",
    ),
    "response format": (ask("x", response_format={"type": "xml"}), "`$.response_format.type`"),
    "unknown tool field": (
        ask("x", tools=[{"type": "function", "function": {"name": "f", "x": 1}}]),
        "unknown field `x`",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
async def test_bad_tool_fields_are_refused_with_the_reason(case: str, client: SluiceClient) -> None:
    body, reason = BAD[case]
    status, answer = await client.create_raw(json.dumps(body).encode())
    assert status == 400, answer
    assert answer["error"]["type"] == "invalid_request"
    assert reason in answer["error"]["message"], answer["error"]["message"]
