"""A user's client of each design, behind bad weather, and what it saw of one stream.

Three designs: ``sse`` (POST the stream, read it over SSE), ``ws`` (POST it, read it
and control it on the streamer's WebSocket) and ``hybrid`` (submit on the gateway's
control WebSocket, read over SSE). Each follows its stream to the end however often
the network cuts it, resuming from the last token it holds as a browser would
(EventSource's ``retry``), and records every token frame with its arrival time.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from libs.client.http import socket_events, socket_url
from libs.common.sse import SSEParser

DESIGNS = ("sse", "ws", "hybrid")
RETRY_S = 1.0  # the ``retry:`` sluice's SSE announces, which EventSource obeys
STALL_S = 0.25
WS_HEADER_BYTES = 2  # a short server frame's header; token messages are short
NETWORK_ERRORS = (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError)


@dataclass(frozen=True, slots=True)
class Frame:
    at_ns: int
    first: int
    n: int
    ts: int


@dataclass
class Seen:
    """One stream as its user saw it, over all its connections."""

    design: str
    flush: str
    sent_ns: int = 0
    frames: list[Frame] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    last_seq: int = 0
    lost: int = 0
    duplicated: int = 0
    connections: int = 0
    bytes: int = 0
    end: str = ""
    events_url: str = ""  # straight to the streamer, to check the text against the log

    def take(self, kind: str, payload: Any, at_ns: int) -> None:
        """One event of the stream; a retryable error leaves ``end`` unset, so it resumes."""
        if kind == "token":
            self._token(payload, at_ns)
        elif kind == "done":
            self.lost += max(0, payload["tokens"] - self.last_seq)
            self.end = "done"
        elif kind == "error" and not payload.get("retryable", False):
            self.end = f"error {payload.get('type', '?')}"

    def _token(self, payload: Any, at_ns: int) -> None:
        last, n = payload["seq"], payload["n"]
        first = last - n + 1
        self.frames.append(Frame(at_ns, first, n, payload["ts"]))
        self.duplicated += max(0, min(last, self.last_seq) - first + 1)
        self.lost += max(0, first - self.last_seq - 1)
        if first > self.last_seq:
            self.texts.append(payload["text"])
        self.last_seq = max(self.last_seq, last)

    @property
    def reconnects(self) -> int:
        """Connections that resumed the stream (attempts cut before they opened are not)."""
        return max(0, self.connections - 1)

    @property
    def tokens(self) -> int:
        return self.last_seq

    def first_token_ms(self) -> float | None:
        return (self.frames[0].at_ns - self.sent_ns) / 1e6 if self.frames else None

    def gaps_ms(self) -> list[float]:
        """Time between successive visible updates (token frames), as the user sees them."""
        at = [f.at_ns for f in self.frames]
        return [(b - a) / 1e6 for a, b in itertools.pairwise(at)]

    def model_gaps_ms(self) -> list[float]:
        """The model's own time between the same frames' first tokens."""
        ts = [f.ts for f in self.frames]
        return [(b - a) / 1e6 for a, b in itertools.pairwise(ts)]

    def stalls(self) -> int:
        """Gaps over :data:`STALL_S` that the model's own gaps do not explain."""
        limit = STALL_S * 1000
        return sum(
            1
            for gap, model in zip(self.gaps_ms(), self.model_gaps_ms(), strict=True)
            if gap > limit and gap - model > limit
        )

    def reading_s(self) -> float:
        return (self.frames[-1].at_ns - self.frames[0].at_ns) / 1e9 if len(self.frames) > 1 else 0.0


@dataclass(frozen=True, slots=True)
class Routes:
    """Where the user's traffic goes: the gateway's and the streamer's proxied addresses."""

    gateway: str
    streamer: str

    def streamer_url(self, url: str) -> str:
        parts = urlsplit(url)
        return f"{self.streamer}{parts.path}?{parts.query}"


async def create(
    session: aiohttp.ClientSession, routes: Routes, body: dict[str, Any]
) -> dict[str, Any]:
    """POST the stream, again after each network failure (the user presses send once)."""
    while True:
        try:
            async with session.post(f"{routes.gateway}/v1/streams", json=body) as response:
                answer: dict[str, Any] = await response.json(content_type=None)
                if response.status == 201:
                    return answer
                raise RuntimeError(f"stream refused: {response.status} {answer}")
        except NETWORK_ERRORS:
            await asyncio.sleep(RETRY_S)


async def submit_on_control(
    session: aiohttp.ClientSession, routes: Routes, body: dict[str, Any], seen: Seen
) -> tuple[dict[str, Any], aiohttp.ClientWebSocketResponse]:
    """Submit on the gateway's control socket; its ack and the socket, which stays open.

    The page holds that socket open before the user presses send (so the clock starts
    once it is open) and while the stream runs. After a failure it connects again.
    """
    url = routes.gateway.replace("http", "ws", 1) + "/v1/control"
    while True:
        ws = None
        with suppress(*NETWORK_ERRORS):
            ws = await session.ws_connect(url)
            seen.sent_ns = seen.sent_ns or time.time_ns()
            await ws.send_json({"type": "submit", "ref": "send", **body})
            async for message in ws:
                reply = msgspec.json.decode(message.data)
                if reply.get("ref") == "send" and reply["type"] == "ack":
                    return dict(reply), ws
                if reply.get("ref") == "send":
                    raise RuntimeError(f"submit refused: {reply}")
        if ws is not None:
            await ws.close()
        await asyncio.sleep(RETRY_S)


async def resuming(connection: Callable[[Seen], Awaitable[None]], seen: Seen) -> None:
    """Run one connection after another, :data:`RETRY_S` apart, until the stream ended."""
    while True:
        with suppress(*NETWORK_ERRORS):
            await connection(seen)
        if seen.end:
            return
        await asyncio.sleep(RETRY_S)


async def follow_sse(session: aiohttp.ClientSession, url: str, seen: Seen) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=10)

    async def connection(seen: Seen) -> None:
        headers = {"Accept": "text/event-stream"}
        if seen.last_seq:
            headers["Last-Event-ID"] = str(seen.last_seq)
        async with session.get(url, headers=headers, timeout=timeout) as response:
            if response.status == 200:
                seen.connections += 1
                await _read_sse(response, seen)

    await resuming(connection, seen)


async def _read_sse(response: aiohttp.ClientResponse, seen: Seen) -> None:
    parser = SSEParser()
    async for chunk in response.content.iter_any():
        now = time.time_ns()
        seen.bytes += len(chunk)
        for event in parser.feed(chunk):
            if event.type == "reconnect":
                return
            seen.take(event.type, event.json(), now)
            if seen.end:
                return


async def follow_socket(session: aiohttp.ClientSession, url: str, seen: Seen) -> None:
    async def connection(seen: Seen) -> None:
        async with session.ws_connect(f"{url}&last_event_id={seen.last_seq}") as ws:
            seen.connections += 1
            async for received in socket_events(ws):
                seen.bytes += len(received.event.data) + WS_HEADER_BYTES
                if received.type == "reconnect":
                    return
                payload = received.json()
                if received.type == "error":
                    payload = payload["error"]
                seen.take(received.type, payload, received.at_ns)
                if seen.end:
                    return

    await resuming(connection, seen)


def _with_flush(url: str, flush: str) -> str:
    return f"{url}&flush={flush}"


async def run_design(
    session: aiohttp.ClientSession, routes: Routes, body: dict[str, Any], seen: Seen, flush: str
) -> None:
    """One user's stream in ``seen.design``, from pressing send to the last token."""
    if seen.design != "hybrid":
        seen.sent_ns = time.time_ns()
        created = await create(session, routes, body)
        await _follow(session, routes, created, seen, flush)
        return
    created, control = await submit_on_control(session, routes, body, seen)
    try:
        await _follow(session, routes, created, seen, flush)
    finally:
        with suppress(*NETWORK_ERRORS):
            await control.close()


async def _follow(
    session: aiohttp.ClientSession,
    routes: Routes,
    created: dict[str, Any],
    seen: Seen,
    flush: str,
) -> None:
    seen.events_url = created["events_url"]
    events = f"{routes.streamer_url(created['events_url'])}&flush={flush}"
    if seen.design == "ws":
        await follow_socket(session, socket_url(events), seen)
    else:
        await follow_sse(session, events, seen)
