"""An OpenAI-compatible upstream that plays one scripted answer, streamed or whole.

The streamed answer is a list of chunk deltas written as the model would: reasoning
first, then parallel tool calls whose arguments arrive in fragments, interleaved
between calls. The whole answer (``stream: false``) is written out separately by
hand, so a test can check that both say the same thing before it compares sluice
with them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MODEL = "up-1"
CREATED = 1_700_000_000


@dataclass(frozen=True)
class Script:
    deltas: list[dict[str, Any]]
    finish_reason: str
    message: dict[str, Any]
    usage: dict[str, Any]


def _call(index: int, fragment: str, call_id: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": fragment}}
    if call_id is not None:
        call.update(id=call_id, type="function")
        call["function"]["name"] = "get_weather"
    return {"tool_calls": [call]}


def parallel_calls(interleaved: bool) -> Script:
    """Reasoning, then calls for Paris and Oslo: one after the other, as OpenAI sends
    them (the SDK's stream helper counts on it), or with their fragments interleaved."""
    paris = [_call(0, "", "call_a"), _call(0, '{"city": "Pa'), _call(0, 'ris"}')]
    oslo = [_call(1, '{"ci', "call_b"), _call(1, 'ty": "Os'), _call(1, 'lo"}')]
    calls = [paris[0], paris[1], oslo[0], paris[2], *oslo[1:]] if interleaved else paris + oslo
    return Script(
        deltas=[
            {"role": "assistant", "content": None, "reasoning_content": "Two cities"},
            {"reasoning_content": ", so two calls."},
            *calls,
        ],
        finish_reason="tool_calls",
        message={
            "role": "assistant",
            "content": None,
            "reasoning_content": "Two cities, so two calls.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                },
            ],
        },
        usage={
            "prompt_tokens": 31,
            "completion_tokens": 24,
            "total_tokens": 55,
            "completion_tokens_details": {"reasoning_tokens": 7},
        },
    )


PARALLEL_CALLS = parallel_calls(interleaved=False)
INTERLEAVED_CALLS = parallel_calls(interleaved=True)

STRUCTURED = Script(
    deltas=[
        {"role": "assistant", "content": "", "reasoning_content": "Paris is mild."},
        {"content": '{"city": "Pa'},
        {"content": 'ris", "celsius": 2'},
        {"content": "1.5}"},
    ],
    finish_reason="stop",
    message={
        "role": "assistant",
        "content": '{"city": "Paris", "celsius": 21.5}',
        "reasoning_content": "Paris is mild.",
    },
    usage={
        "prompt_tokens": 40,
        "completion_tokens": 12,
        "total_tokens": 52,
        "completion_tokens_details": {"reasoning_tokens": 4},
    },
)


@dataclass
class ScriptedUpstream:
    script: Script = PARALLEL_CALLS
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": CREATED}
        chunk.update(model=MODEL, choices=choices, **extra)
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        script = self.script
        if not body.get("stream"):
            choice = {"index": 0, "message": script.message, "finish_reason": script.finish_reason}
            return web.json_response(
                {
                    "id": "chatcmpl-up",
                    "object": "chat.completion",
                    "created": CREATED,
                    "model": MODEL,
                    "choices": [choice],
                    "usage": script.usage,
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for delta in script.deltas:
            await response.write(self._chunk([{"index": 0, "delta": delta}]))
            await asyncio.sleep(0.005)
        end = {"index": 0, "delta": {}, "finish_reason": script.finish_reason}
        await response.write(self._chunk([end]))
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(self._chunk([], usage=script.usage))
        await response.write(b"data: [DONE]\n\n")
        return response


async def serve_upstream() -> AsyncIterator[ScriptedUpstream]:
    upstream = ScriptedUpstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", upstream.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    upstream.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield upstream
    finally:
        await runner.cleanup()
