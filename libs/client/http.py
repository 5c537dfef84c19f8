"""The contract's HTTP calls and SSE events, one call each, stamped with receive times.

It speaks HTTP and SSE exactly as a browser would (the WHATWG parser in
:mod:`libs.common.sse`). The tests and the benchmark use it where they need each
raw event; :mod:`libs.client.stream` builds resume and control on it for programs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from libs.common.sse import Event, SSEParser


@dataclass(frozen=True, slots=True)
class Received:
    event: Event
    at_ns: int

    @property
    def type(self) -> str:
        return self.event.type

    def json(self) -> Any:
        return self.event.json()


class SluiceClient:
    def __init__(
        self, session: aiohttp.ClientSession, gateway: str, api_key: str | None = None
    ) -> None:
        self.session = session
        self.gateway = gateway.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def create(self, **body: Any) -> dict[str, Any]:
        """POST /v1/streams; raises :class:`StreamRefused` with the JSON error for a non-201."""
        status, answer = await self.create_raw(msgspec.json.encode(body))
        if status != 201:
            raise StreamRefused(status, msgspec.json.encode(answer), {})
        return dict(answer)

    async def create_raw(
        self, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        async with self.session.post(
            f"{self.gateway}/v1/streams",
            data=body,
            headers={"Content-Type": "application/json", **self.headers, **(headers or {})},
        ) as response:
            return response.status, await response.json(content_type=None)

    async def get(self, stream_id: str) -> tuple[int, Any]:
        async with self.session.get(
            f"{self.gateway}/v1/streams/{stream_id}", headers=self.headers
        ) as r:
            return r.status, await r.json(content_type=None)

    async def cancel(self, stream_id: str) -> tuple[int, Any]:
        async with self.session.post(
            f"{self.gateway}/v1/streams/{stream_id}/cancel", headers=self.headers
        ) as response:
            return response.status, await response.json(content_type=None)


async def events(
    session: aiohttp.ClientSession,
    url: str,
    last_event_id: str | None = None,
    read_chunk: int = 65536,
    read_timeout_s: float | None = None,
) -> AsyncIterator[Received]:
    """Follow an SSE URL until the server closes it, yielding events as they arrive.

    ``read_timeout_s`` bounds the silence between two chunks (the server pings while
    a stream is quiet), so a connection that died without a word is noticed.
    """
    headers = {"Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    timeout = aiohttp.ClientTimeout(total=None, sock_read=read_timeout_s)
    async with session.get(url, headers=headers, timeout=timeout) as response:
        if response.status != 200:
            body = await response.read()
            raise StreamRefused(response.status, body, dict(response.headers))
        parser = SSEParser()
        async for chunk in response.content.iter_any():
            now = time.time_ns()
            for event in parser.feed(chunk):
                yield Received(event, now)


def socket_url(events_url: str) -> str:
    """The stream's WebSocket URL, from the ``events_url`` that ``POST /v1/streams`` answers."""
    base, _, query = events_url.partition("?")
    return base.replace("http", "ws", 1).removesuffix("/events") + "/ws?" + query


async def socket_events(
    ws: aiohttp.ClientWebSocketResponse, last_event_id: str = ""
) -> AsyncIterator[Received]:
    """Follow a stream's WebSocket until it closes, each message as the SSE event it stands for.

    Token and ``done`` messages carry ``seq`` where SSE has ``id``; the control replies
    (``ack``, ``pong``, control ``error`` frames) come through as events of their type.
    """
    async for message in ws:
        if message.type != aiohttp.WSMsgType.TEXT:
            break
        now = time.time_ns()
        data = message.data
        head = _head.decode(data)
        if head.seq is not None:
            last_event_id = str(head.seq)
        yield Received(Event(head.type, data, last_event_id), now)


class _Head(msgspec.Struct):
    type: str
    seq: int | None = None


_head = msgspec.json.Decoder(_Head)


class StreamRefused(Exception):
    """The SSE endpoint answered with an HTTP error instead of a stream."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        super().__init__(f"{status}: {body[:200]!r}")
        self.status, self.body, self.headers = status, body, headers

    def json(self) -> Any:
        return msgspec.json.decode(self.body)

    def label(self) -> str:
        """``<status> <error type>``, how the benchmark counts a refusal."""
        try:
            kind = self.json()["error"]["type"]
        except (msgspec.DecodeError, KeyError, TypeError):
            kind = "error"
        return f"{self.status} {kind}"


def text_of(received: list[Received]) -> str:
    return "".join(r.json()["text"] for r in received if r.type == "token")
