"""The runner's ``openai`` backend against servers it did not write, and against sluice.

Three upstreams: llmock (a scriptable OpenAI mock from PyPI, started as a process),
a raw-socket fake in this test process that notes the instant a client hangs up and
when it sent each token, and the shared sluice stack (sluice in front of sluice).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from libs.client.http import Received, SluiceClient, events
from libs.common.sse import SSEParser
from libs.tools.servers import Server, ServerError, find_binary, free_port
from libs.tools.stack import Stack
from tests.conftest import stack_with_models
from tests.integration.helpers import final, read_stream, text, tokens

API_KEY = "key-b"
UPSTREAM_SECRET = "sk-upstream-live-0123456789"
MOCK_READ_TIMEOUT_S = 2
Script = Callable[[asyncio.StreamWriter], Coroutine[Any, Any, None]]


def chunk(content: str) -> bytes:
    payload = {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


FINISH = b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'
HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
)


class FakeUpstream:
    """A raw-socket OpenAI-compatible server: each answer follows ``script``.

    It records when a client hangs up mid-answer (``hangups``) and when each token
    left (``sent``), on this process's monotonic clock.
    """

    def __init__(self) -> None:
        self.port = 0
        self.script: Script = self.endless
        self.hangups: asyncio.Queue[float] = asyncio.Queue()
        self.requests: list[dict[str, Any]] = []
        self.sent: list[float] = []

    def answer_with(self, script: Script) -> None:
        """Answer the next requests with ``script``, forgetting earlier requests and hangups."""
        self.script = script
        self.hangups = asyncio.Queue()
        self.requests.clear()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        self.requests.append(json.loads(await reader.readexactly(length)))
        writer.write(HEAD)
        answer = asyncio.create_task(self.script(writer))
        hangup = asyncio.create_task(reader.read())
        done, _ = await asyncio.wait({answer, hangup}, return_when=asyncio.FIRST_COMPLETED)
        if hangup in done:
            self.hangups.put_nowait(time.monotonic())
        for task in (answer, hangup):
            task.cancel()
        writer.close()

    async def endless(self, writer: asyncio.StreamWriter) -> None:
        while True:
            writer.write(chunk("tick "))
            await writer.drain()
            await asyncio.sleep(0.01)

    def paced(self, count: int, interval_s: float) -> Script:
        """``count`` tokens ``t<i> ``, one every ``interval_s``, the first at once."""

        async def script(writer: asyncio.StreamWriter) -> None:
            self.sent = []
            for index in range(count):
                self.sent.append(time.monotonic())
                writer.write(chunk(f"t{index} "))
                await writer.drain()
                await asyncio.sleep(interval_s)
            writer.write(FINISH + b"data: [DONE]\n\n")
            await writer.drain()

        return script

    @staticmethod
    async def echoes_its_credentials(writer: asyncio.StreamWriter) -> None:
        error = {"error": {"message": f"bad header Authorization: Bearer {UPSTREAM_SECRET}"}}
        writer.write(chunk("fine ") + b"data: " + json.dumps(error).encode() + b"\n\n")
        await writer.drain()
        await asyncio.sleep(30)

    @staticmethod
    async def bom_and_cr_lines(writer: asyncio.StreamWriter) -> None:
        """A byte-order mark, CR-only line endings, a comment: all valid event-stream."""
        body = (
            b"\xef\xbb\xbf: hello\r\r" + chunk("one ") + chunk("two") + FINISH + b"data: [DONE]\n\n"
        )
        writer.write(body.replace(b"\n", b"\r"))
        await writer.drain()

    @staticmethod
    async def not_sse(writer: asyncio.StreamWriter) -> None:
        writer.write(chunk("fine ") + b"<html>this is not an event stream</html>\n\n")
        await writer.drain()
        await asyncio.sleep(30)


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    yield upstream
    server.close()


@pytest.fixture(scope="module")
def llmock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llmock from PyPI, pacing its chunks 5 ms apart like a fast model."""
    try:
        binary = find_binary("llmock")
    except ServerError:
        pytest.fail("llmock is missing: it is a dev dependency (pip install llmock==0.2.2)")
    port = free_port()
    argv = [binary, "serve", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--stream-chunk-delay-ms", "5", "--log-level", "warning"]
    server = Server("llmock", port, argv, tmp_path_factory.mktemp("llmock")).start(timeout_s=30)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def relay_stack(
    stack: Stack, llmock: str, fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A second sluice, with API keys, whose models are all ``openai`` backends."""
    models = {
        "mock": {
            "base_url": f"{llmock}/v1",
            "upstream_model": "gpt-4o",
            "read_timeout_s": MOCK_READ_TIMEOUT_S,
        },
        "relay": {"base_url": f"{stack.streamer}/v1", "upstream_model": "sim"},
        "fake": {"base_url": f"http://127.0.0.1:{fake.port}/v1", "upstream_model": "fake-1"},
        "down": {"base_url": f"http://127.0.0.1:{free_port()}/v1", "max_retries": 1},
    }
    tmp = tmp_path_factory.mktemp("relay")
    with stack_with_models(tmp, models, SLUICE_API_KEYS=f"{API_KEY}:b") as suite:
        yield suite


@pytest.fixture
def client_b(session: aiohttp.ClientSession, relay_stack: Stack) -> SluiceClient:
    return SluiceClient(session, relay_stack.gateway, api_key=API_KEY)


@pytest.fixture
async def mock(session: aiohttp.ClientSession, llmock: str) -> AsyncIterator[LLMock]:
    admin = LLMock(session, llmock)
    await admin.reset()
    yield admin
    await admin.reset()


class LLMock:
    """llmock's admin API: script the next answers, count the requests it saw."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url

    async def script(self, *behaviors: dict[str, Any]) -> None:
        body = {"behaviors": list(behaviors)}
        async with self.session.post(f"{self.url}/_llmock/scenario", json=body) as response:
            assert response.status == 201, await response.text()

    async def reset(self) -> None:
        async with self.session.post(f"{self.url}/_llmock/reset") as response:
            assert response.status == 200

    async def requests(self) -> list[dict[str, Any]]:
        async with self.session.get(f"{self.url}/_llmock/requests") as response:
            return list((await response.json())["requests"])


def hello(content: str = "hello") -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": content}]


async def test_streams_from_llmock_with_upstream_usage_in_done(
    client_b: SluiceClient, session: aiohttp.ClientSession, mock: LLMock, llmock: str
) -> None:
    answer = "alpha beta gamma delta epsilon"
    await mock.script({"type": "reply", "text": answer, "times": 2})
    body = {"model": "gpt-4o", "messages": hello()}
    async with session.post(f"{llmock}/v1/chat/completions", json=body) as response:
        usage = (await response.json())["usage"]
    created = await client_b.create(model="mock", messages=hello())
    received = await read_stream(session, created["events_url"])

    assert text(received) == answer
    assert [t["seq"] for t in tokens(received)][-1] == 5
    done = final(received)
    assert done.type == "done", done.json()
    assert done.json()["finish_reason"] == "stop"
    assert done.json()["prompt_tokens"] == usage["prompt_tokens"]
    assert done.json()["completion_tokens"] == usage["completion_tokens"]
    sent = (await mock.requests())[-1]
    assert sent["model"] == "gpt-4o", sent


async def test_the_sdk_streams_through_sluice_to_llmock(relay_stack: Stack, mock: LLMock) -> None:
    await mock.script({"type": "reply", "text": "through two hops"})
    async with openai.AsyncOpenAI(
        base_url=f"{relay_stack.streamer}/v1", api_key=API_KEY, max_retries=0
    ) as sdk:
        stream = await sdk.chat.completions.create(
            model="mock",
            messages=hello(),
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "through two hops"
    )
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_sluice_in_front_of_sluice_relays_the_same_text(
    stack: Stack, client_b: SluiceClient, session: aiohttp.ClientSession
) -> None:
    direct = await SluiceClient(session, stack.gateway).create(
        messages=hello("relay me"), max_tokens=15
    )
    relayed = await client_b.create(model="relay", messages=hello("relay me"), max_tokens=15)
    upstream, downstream = await asyncio.gather(
        read_stream(session, direct["events_url"]), read_stream(session, relayed["events_url"])
    )

    assert text(downstream) == text(upstream) and len(text(upstream)) > 0
    done = final(downstream).json()
    assert done["finish_reason"] == "length" and done["completion_tokens"] == 15


async def test_cancel_closes_the_upstream_connection_at_once(
    client_b: SluiceClient, session: aiohttp.ClientSession, fake: FakeUpstream
) -> None:
    fake.answer_with(fake.endless)
    created = await client_b.create(model="fake", messages=hello("forever"))
    received: list[Received] = []
    cancelled, status = 0.0, 0
    async with asyncio.timeout(15):
        async for event in events(session, created["events_url"]):
            received.append(event)
            if not cancelled and len(tokens(received)) == 5:
                cancelled = time.monotonic()
                status, _ = await client_b.cancel(created["id"])
    hung_up = await asyncio.wait_for(fake.hangups.get(), 5)

    close_ms = (hung_up - cancelled) * 1000
    print(f"\nupstream saw the close {close_ms:.1f} ms after the cancel request was sent")
    assert status == 202
    assert close_ms < 1000, f"upstream closed {close_ms:.0f} ms after cancel (target 100 ms)"
    done = final(received).json()
    assert done["finish_reason"] == "cancelled" and done["tokens"] >= 5
    request = fake.requests[-1]
    assert set(request) == {"model", "messages", "max_tokens", "stream", "stream_options"}
    assert request["model"] == "fake-1" and request["stream_options"] == {"include_usage": True}
    assert request["messages"] == hello("forever") and request["max_tokens"] == 256


async def test_any_valid_event_stream_spelling_is_read(
    client_b: SluiceClient, session: aiohttp.ClientSession, fake: FakeUpstream
) -> None:
    fake.answer_with(fake.bom_and_cr_lines)
    created = await client_b.create(model="fake", messages=hello("cr"))
    received = await read_stream(session, created["events_url"], timeout_s=15)
    assert final(received).type == "done", final(received).json()
    assert text(received) == "one two"


async def test_sampling_parameters_reach_the_upstream_as_they_are(
    client_b: SluiceClient, session: aiohttp.ClientSession, relay_stack: Stack, fake: FakeUpstream
) -> None:
    sampling: dict[str, Any] = {"temperature": 0.2, "top_p": 0.9, "stop": ["\n\n"], "seed": 7}
    fake.answer_with(fake.paced(3, 0.001))
    created = await client_b.create(model="fake", messages=hello("native"), sampling=sampling)
    await read_stream(session, created["events_url"])
    async with openai.AsyncOpenAI(
        base_url=f"{relay_stack.streamer}/v1", api_key=API_KEY, max_retries=0
    ) as sdk:
        await sdk.chat.completions.create(
            model="fake", messages=hello("sdk"), frequency_penalty=0.5, **sampling
        )
    native, via_sdk = fake.requests[-2:]
    assert {key: native[key] for key in sampling} == sampling
    assert {key: via_sdk[key] for key in sampling} == sampling
    assert via_sdk["frequency_penalty"] == 0.5 and "frequency_penalty" not in native
    status, answer = await client_b.create_raw(b'{"prompt": "x", "sampling": {"temperature": 9}}')
    assert status == 400 and "`$.sampling.temperature`" in answer["error"]["message"]


async def test_abandon_closes_the_upstream_connection(
    client_b: SluiceClient, fake: FakeUpstream
) -> None:
    fake.answer_with(fake.endless)
    created = await client_b.create(
        model="fake", messages=hello("nobody reads"), abandon_after_s=0.5
    )
    await asyncio.wait_for(fake.hangups.get(), 10)
    for _ in range(50):
        _, info = await client_b.get(created["id"])
        if info["status"] != "running":
            break
        await asyncio.sleep(0.1)
    assert info["status"] == "abandoned"


async def test_429_before_the_first_token_is_retried(
    client_b: SluiceClient, session: aiohttp.ClientSession, mock: LLMock
) -> None:
    await mock.script(
        {"type": "fail", "status": 429, "times": 1}, {"type": "reply", "text": "second try"}
    )
    created = await client_b.create(model="mock", messages=hello())
    received = await read_stream(session, created["events_url"])
    assert final(received).type == "done" and text(received) == "second try"
    assert len(await mock.requests()) == 2


FAILURES = {
    "refused": ("down", None, "cannot reach the model server", 2),
    "500": ("mock", {"type": "fail", "status": 500, "times": None}, "answered 500", 3),
    "429": ("mock", {"type": "fail", "status": 429, "times": None}, "answered 429", 3),
    "cut": ("mock", {"type": "stream_fault", "kind": "disconnect", "after_chunks": 3}, "broke", 1),
    "truncated": (
        "mock",
        {"type": "stream_fault", "kind": "truncate", "after_chunks": 3},
        "without finishing the answer",
        1,
    ),
    "garbage json": (
        "mock",
        {"type": "stream_fault", "kind": "malformed", "after_chunks": 2},
        "sent garbage",
        1,
    ),
    "stall": (
        "mock",
        {"type": "stream_fault", "kind": "stall", "after_chunks": 2, "stall_seconds": 20},
        f"sent nothing for {MOCK_READ_TIMEOUT_S}s",
        1,
    ),
    "not sse": ("fake", None, "not server-sent events", 1),
}


@pytest.mark.parametrize("case", list(FAILURES))
async def test_upstream_failure_ends_the_stream_with_a_clear_error(
    case: str,
    client_b: SluiceClient,
    session: aiohttp.ClientSession,
    mock: LLMock,
    fake: FakeUpstream,
) -> None:
    model, behavior, fragment, attempts = FAILURES[case]
    if behavior is not None:
        await mock.script(behavior, {"type": "reply", "text": "one two three four five six"})
    fake.answer_with(fake.not_sse)
    created = await client_b.create(model=model, messages=hello(case))
    received = await read_stream(session, created["events_url"], timeout_s=15)

    error = final(received)
    assert error.type == "error", [r.type for r in received]
    assert error.json()["type"] == "upstream_error"
    assert fragment in error.json()["message"], error.json()["message"]
    assert "127.0.0.1" not in error.json()["message"]
    if model != "down" and attempts == 1:
        delivered = sum(t["n"] for t in tokens(received))  # a frame may carry several
        assert f"(after {delivered} tokens)" in error.json()["message"]
    if attempts > 1:
        assert f"after {attempts} attempts" in error.json()["message"]
    if model == "mock":
        assert len(await mock.requests()) == attempts
    _, info = await client_b.get(created["id"])
    assert info["status"] == "failed" and info["error"]["type"] == "upstream_error"


async def test_chat_endpoint_answers_an_upstream_failure_as_openai_errors(
    relay_stack: Stack, mock: LLMock
) -> None:
    await mock.script({"type": "fail", "status": 500, "times": None})
    async with openai.AsyncOpenAI(
        base_url=f"{relay_stack.streamer}/v1", api_key=API_KEY, max_retries=0
    ) as sdk:
        with pytest.raises(openai.InternalServerError) as unary:
            await sdk.chat.completions.create(model="mock", messages=hello())
        stream = await sdk.chat.completions.create(
            model="mock",
            messages=hello(),
            stream=True,
        )
        with pytest.raises(openai.APIError) as streamed:
            async for _ in stream:
                pass
    assert unary.value.status_code == 502
    assert isinstance(unary.value.body, dict) and unary.value.body["type"] == "upstream_error"
    assert "answered 500" in unary.value.message
    assert "answered 500" in streamed.value.message
    assert isinstance(streamed.value.body, dict)
    assert streamed.value.body["type"] == "upstream_error"


async def test_chat_endpoint_and_models_need_the_api_key(relay_stack: Stack) -> None:
    base_url = f"{relay_stack.streamer}/v1"
    async with openai.AsyncOpenAI(base_url=base_url, api_key="wrong", max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError) as caught:
            await sdk.models.list()
        assert isinstance(caught.value.body, dict) and caught.value.body["type"] == "unauthorized"
    async with openai.AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=0) as sdk:
        page = await sdk.models.list()
    assert [m.id for m in page.data] == ["sim", "down", "fake", "mock", "relay"]


async def timed_tokens(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[float, dict[int, float]]:
    """Start time and the arrival time of each ``t<i>`` token of a streamed chat answer."""
    arrivals: dict[int, float] = {}
    started = time.monotonic()
    async with session.post(url, json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        parser = SSEParser()
        async for data in response.content.iter_any():
            now = time.monotonic()
            for event in parser.feed(data):
                if event.data == "[DONE]":
                    continue
                choices = event.json()["choices"]
                content = choices[0]["delta"].get("content") if choices else None
                for word in (content or "").split():
                    arrivals[int(word[1:])] = now
    return started, arrivals


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def test_overhead_of_sluice_against_calling_the_upstream_directly(
    relay_stack: Stack,
    session: aiohttp.ClientSession,
    fake: FakeUpstream,
    capsys: pytest.CaptureFixture[str],
) -> None:
    count, interval_s, runs = 50, 0.02, 5
    fake.answer_with(fake.paced(count, interval_s))
    routes = {
        "direct": (f"http://127.0.0.1:{fake.port}/v1/chat/completions", {}),
        "sluice": (
            f"{relay_stack.streamer}/v1/chat/completions",
            {"Authorization": f"Bearer {API_KEY}"},
        ),
    }
    ttft: dict[str, list[float]] = {"direct": [], "sluice": []}
    latency: dict[str, list[float]] = {"direct": [], "sluice": []}
    for run in range(runs):
        for route, (url, headers) in routes.items():
            body = {"model": "fake", "messages": hello(f"measure {run}"), "stream": True}
            started, arrivals = await asyncio.wait_for(
                timed_tokens(session, url, body, headers), 30
            )
            assert sorted(arrivals) == list(range(count)), route
            ttft[route].append((arrivals[0] - started) * 1000)
            latency[route] += [(arrivals[i] - fake.sent[i]) * 1000 for i in range(count)]

    lines = [f"\noverhead ({runs} runs x {count} tokens, one every {interval_s * 1000:g} ms):"]
    for route in routes:
        lines.append(
            f"  {route:6}  ttft p50 {statistics.median(ttft[route]):6.2f} ms"
            f"  token latency p50 {percentile(latency[route], 0.5):6.2f} ms"
            f"  p99 {percentile(latency[route], 0.99):6.2f} ms"
        )
    with capsys.disabled():
        print("\n".join(lines))
    assert statistics.median(ttft["sluice"]) < 1000
    assert percentile(latency["sluice"], 0.5) < 250


async def test_an_upstream_error_echoing_credentials_reaches_the_logs_not_the_tenant(
    client_b: SluiceClient, session: aiohttp.ClientSession, fake: FakeUpstream, relay_stack: Stack
) -> None:
    fake.answer_with(fake.echoes_its_credentials)
    created = await client_b.create(model="fake", messages=hello("leak"))
    error = final(await read_stream(session, created["events_url"], timeout_s=15)).json()
    _, info = await client_b.get(created["id"])
    assert error["type"] == "upstream_error" and info["error"]["type"] == "upstream_error"
    for shown in (error["message"], info["error"]["message"]):
        assert UPSTREAM_SECRET not in shown and "correlation id" in shown
    correlation_id = error["message"].rsplit(" ", 1)[-1].rstrip(")")
    logs = "".join(path.read_text() for path in relay_stack.logdir.glob("runner-*.log"))
    logged = [line for line in logs.splitlines() if correlation_id in line]
    assert logged and UPSTREAM_SECRET in logged[0]
