"""One kind of fuzzed request per public endpoint, each checking what came back."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec

from libs.tools.fuzz import mutate
from libs.tools.fuzz.checks import frame_problem, is_page, json_problem, sse_problem

TIMEOUT = aiohttp.ClientTimeout(total=20)
SSE_READ_S = 1.0
SIM = {"tokens": 3, "tokens_per_s": 1000, "ttft_ms": 0}
STREAM_FIELDS = [
    "model",
    "messages",
    "prompt",
    "max_tokens",
    "conversation_id",
    "supersede",
    "debounce_ms",
    "abandon_after_s",
    "metadata",
    "sim",
    "sampling",
]
CHAT_FIELDS = ["model", "messages", "max_tokens", "stream", "stream_options", "n", "seed", "sim"]
FRAME_FIELDS = ["type", "ref", "stream_id", "rating", "comment", "max_events_per_s", "prompt"]
FRAME_BASES: list[dict[str, Any]] = [
    {"type": "submit", "prompt": "fuzz", "sim": SIM},
    {"type": "cancel", "stream_id": "st_" + "0" * 32},
    {"type": "pace", "stream_id": "st_" + "0" * 32, "max_events_per_s": 5},
    {"type": "feedback", "stream_id": "st_" + "0" * 32, "rating": 1},
    {"type": "ping"},
]


@dataclass
class Outcome:
    sent: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


@dataclass
class Target:
    session: aiohttp.ClientSession
    gateway: str
    streamer: str
    api_key: str | None
    streams: dict[str, str] = field(default_factory=dict)
    """Streams the fuzz created: id → events URL; cancelled at the end."""

    def auth(self, rng: random.Random) -> dict[str, str]:
        valid = f"Bearer {self.api_key}" if self.api_key else ""
        value = mutate.header_value(rng, valid)
        return {"Authorization": value} if value else {}

    async def cancel_all(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        for stream_id in list(self.streams):
            url = f"{self.gateway}/v1/streams/{stream_id}/cancel"
            async with self.session.post(url, headers=headers) as answer:
                await answer.read()


async def _http(
    target: Target,
    method: str,
    url: str,
    label: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[Outcome, int, bytes]:
    """Send one request and check its answer; a request the client cannot send is skipped."""
    outcome = Outcome()
    try:
        async with target.session.request(
            method, url, data=data, headers=headers, timeout=TIMEOUT
        ) as answer:
            content_type = answer.headers.get("Content-Type", "")
            if "text/event-stream" in content_type:
                raw = await _some_of(answer)
                problem = sse_problem(raw) if answer.status == 200 else "SSE with an error status"
            elif is_page(method, answer.status, answer.url.path, content_type):
                raw, problem = await answer.read(), None
            else:
                raw = await answer.read()
                problem = json_problem(answer.status, content_type, raw)
    except (ValueError, aiohttp.InvalidURL):
        return outcome, 0, b""
    except (TimeoutError, aiohttp.ClientError) as exc:
        outcome.sent = 1
        outcome.problems.append(f"{label}: no answer ({exc!r})")
        return outcome, 0, b""
    outcome.sent = 1
    outcome.answers[f"{label} {answer.status}"] += 1
    if problem:
        outcome.problems.append(f"{label}: {problem}")
    return outcome, answer.status, raw


async def _some_of(answer: aiohttp.ClientResponse) -> bytes:
    """The start of an event stream: what arrives within a moment (streams may be long)."""
    chunks: list[bytes] = []
    try:
        async with asyncio.timeout(SSE_READ_S):
            async for chunk in answer.content.iter_any():
                chunks.append(chunk)
    except TimeoutError:
        pass
    return b"".join(chunks)


def _headers(target: Target, rng: random.Random) -> dict[str, str]:
    headers = {"Content-Type": rng.choice(["application/json"] * 4 + ["text/plain", "x/y"])}
    return headers | target.auth(rng)


async def create(target: Target, rng: random.Random) -> Outcome:
    base = {"prompt": "fuzz", "sim": SIM}
    data = mutate.body(rng, base, STREAM_FIELDS)
    url = f"{target.gateway}/v1/streams"
    outcome, status, raw = await _http(
        target, "POST", url, "POST /v1/streams", data, _headers(target, rng)
    )
    if status == 201:
        created = msgspec.json.decode(raw)
        target.streams[created["id"]] = created["events_url"]
    return outcome


async def inspect(target: Target, rng: random.Random) -> Outcome:
    stream_id = quote(mutate.stream_id(rng, list(target.streams)), safe="")
    method, path = rng.choice([("GET", ""), ("POST", "/cancel"), ("DELETE", ""), ("PUT", "")])
    url = f"{target.gateway}/v1/streams/{stream_id}{path}"
    outcome, _, _ = await _http(
        target, method, url, f"{method} /v1/streams/<id>{path}", None, target.auth(rng)
    )
    return outcome


async def read_events(target: Target, rng: random.Random) -> Outcome:
    if target.streams and rng.random() < 0.7:
        url = rng.choice(list(target.streams.values()))
    else:
        url = f"{target.streamer}/v1/streams/{quote(mutate.stream_id(rng, []), safe='')}/events"
    if rng.random() < 0.4:
        url = url.split("?token=")[0] + "?token=" + quote(rng.choice(mutate.STRANGE_STRINGS))
    headers = {}
    last = mutate.header_value(rng, str(rng.randint(0, 5)))
    if last is not None:
        headers["Last-Event-ID"] = last
    outcome, _, _ = await _http(target, "GET", url, "GET events", None, headers)
    return outcome


async def chat(target: Target, rng: random.Random) -> Outcome:
    base: dict[str, Any] = {
        "model": "sim",
        "messages": [{"role": "user", "content": "fuzz"}],
        "sim": SIM,
        "stream": rng.random() < 0.5,
    }
    data = mutate.body(rng, base, CHAT_FIELDS)
    url = f"{target.streamer}/v1/chat/completions"
    outcome, _, _ = await _http(target, "POST", url, "POST chat", data, _headers(target, rng))
    return outcome


OTHER_PATHS = [
    *("/v1/models", "/v1/nothing", "/v1/streams", "/v1/control/x"),
    *("/", "/chat", "/sdk/sluice.js", "/ui/chat.css"),  # the chat page and the SDK
    *("/ui/../pyproject.toml", "/ui/%2e%2e/README.md", "/ui/%2e%2e%2fREADME.md"),
]


async def elsewhere(target: Target, rng: random.Random) -> Outcome:
    """Unknown routes and methods, and the models list."""
    base = rng.choice([target.gateway, target.streamer])
    path = rng.choice(OTHER_PATHS)
    path += rng.choice(["", "?" + quote(rng.choice(mutate.STRANGE_STRINGS))])
    method = rng.choice(["GET", "POST", "PATCH", "OPTIONS"])
    outcome, _, _ = await _http(
        target, method, base + path, f"{method} other", None, target.auth(rng)
    )
    return outcome


async def control(target: Target, rng: random.Random) -> Outcome:
    """A control socket and a burst of mutated frames; it must answer each and stay open."""
    outcome = Outcome()
    url = f"{target.gateway}/v1/control"
    try:
        async with target.session.ws_connect(url, headers=target.auth(rng)) as ws:
            for _ in range(rng.randint(1, 8)):
                await _frame(ws, rng, outcome)
                if ws.closed:
                    outcome.problems.append(f"socket closed: {ws.close_code}")
                    break
    except aiohttp.WSServerHandshakeError as exc:
        outcome.sent += 1
        outcome.answers[f"WS handshake {exc.status}"] += 1
        if exc.status not in (401, 429):
            outcome.problems.append(f"handshake refused with {exc.status}")
    except (ValueError, aiohttp.InvalidURL):
        pass
    except (TimeoutError, aiohttp.ClientError) as exc:
        outcome.sent += 1
        outcome.problems.append(f"control socket failed: {exc!r}")
    return outcome


async def _frame(ws: aiohttp.ClientWebSocketResponse, rng: random.Random, outcome: Outcome) -> None:
    base = rng.choice(FRAME_BASES)
    if rng.random() < 0.15:
        await ws.send_bytes(mutate.mutate_bytes(rng, msgspec.json.encode(base)))
    else:
        await ws.send_str(mutate.body(rng, base, FRAME_FIELDS).decode(errors="replace"))
    outcome.sent += 1
    try:
        reply = await ws.receive(timeout=10)
    except TimeoutError:
        outcome.problems.append("no answer to a frame")
        return
    if reply.type != aiohttp.WSMsgType.TEXT:
        outcome.problems.append(f"answer of type {reply.type!r}: {reply.data!r:.100}")
        return
    outcome.answers["WS frame answered"] += 1
    if problem := frame_problem(reply.data):
        outcome.problems.append(problem)


Kind = Callable[[Target, random.Random], Awaitable[Outcome]]
KINDS: list[tuple[Kind, int]] = [
    (create, 5),
    (inspect, 3),
    (read_events, 3),
    (chat, 2),
    (elsewhere, 2),
    (control, 2),
]
"""Each kind and its weight in the mix."""
