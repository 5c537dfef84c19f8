"""The public async client: create a stream, follow it with automatic resume, steer it.

>>> async with Client("http://127.0.0.1:8080") as client:
...     stream = await client.create("why is the sky blue?")
...     async for token in stream.tokens():
...         print(token.text, end="")

Following a stream survives a dropped connection, a streamer restart and a retryable
error: it reconnects with ``Last-Event-ID`` after the last token it has, and drops a
frame it already has, so the text comes out exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from types import TracebackType
from typing import Any

import aiohttp

from libs.client.control import ControlSocket
from libs.client.events import (
    Done,
    Reconnecting,
    StreamEvent,
    Token,
    decode_done,
    decode_error,
    decode_status,
    decode_token,
)
from libs.client.http import SluiceClient, StreamRefused, events

RETRY_S = (0.2, 0.5, 1.0, 2.0, 4.0)


class StreamFailed(Exception):
    """The stream ended in an error that resuming cannot fix (or resuming gave up)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.type, self.message = kind, message


class Stream:
    """One generation: its id and URLs, and everything its reader has seen so far."""

    def __init__(self, client: Client, created: dict[str, Any]) -> None:
        self.client = client
        self.id: str = created["id"]
        self.events_url: str = created["events_url"]
        self.status: str = created.get("status", "queued")
        self.last_seq = 0
        self.done: Done | None = None

    async def events(self) -> AsyncGenerator[StreamEvent, None]:
        """Status, tokens (each exactly once), reconnect notices, then :class:`Done`."""
        failures = 0
        while self.done is None:
            reason = "the server closed the stream before it ended"
            try:
                async for event in self._connection():
                    failures = 0
                    yield event
            except _Retry as retry:
                reason = str(retry)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if self.done is not None:
                return
            failures += 1
            if failures > self.client.max_reconnects:
                raise StreamFailed(
                    "disconnected", f"gave up after {failures - 1} retries: {reason}"
                )
            yield Reconnecting(self.last_seq, failures, reason)
            await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S)) - 1])

    async def tokens(self) -> AsyncIterator[Token]:
        async for event in self.events():
            if isinstance(event, Token):
                yield event

    async def text(self) -> str:
        """The whole answer's text, once the stream has ended."""
        return "".join([token.text async for token in self.tokens()])

    async def cancel(self) -> dict[str, Any]:
        """Stop the generation over the control socket; the stream then ends with ``done``."""
        return await self.client.control.cancel(self.id)

    async def pace(self, max_events_per_s: float) -> dict[str, Any]:
        return await self.client.control.pace(self.id, max_events_per_s)

    async def feedback(self, rating: int, comment: str = "") -> dict[str, Any]:
        return await self.client.control.feedback(self.id, rating, comment)

    async def _connection(self) -> AsyncIterator[StreamEvent]:
        after = str(self.last_seq) if self.last_seq else None
        try:
            async for received in events(
                self.client.session,
                self.events_url,
                after,
                read_timeout_s=self.client.read_timeout_s,
            ):
                event = self._decode(received.type, received.event.data)
                if event is not None:
                    yield event
                if self.done is not None:
                    return
        except StreamRefused as refused:
            if refused.status < 500:
                raise StreamFailed(*_error_of(refused)) from None
            raise _Retry(refused.label()) from None

    def _decode(self, kind: str, data: str) -> StreamEvent | None:
        if kind == "token":
            token = decode_token(data)
            if token.seq <= self.last_seq:
                return None  # already delivered before a resume
            self.last_seq = token.seq
            return token
        if kind == "status":
            status = decode_status(data)
            self.status = status.status
            return status
        if kind == "done":
            self.done = decode_done(data)
            self.status = self.done.finish_reason
            return self.done
        if kind == "error":
            error = decode_error(data)
            if not error.retryable:
                raise StreamFailed(error.type, error.message)
            raise _Retry(f"{error.type}: {error.message}")
        if kind == "reconnect":
            raise _Retry("the streamer asked to reconnect")
        return None


class _Retry(Exception):
    """This connection ended in a way that resuming fixes."""


def _error_of(refused: StreamRefused) -> tuple[str, str]:
    try:
        error = refused.json()["error"]
        return str(error["type"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        return "http_error", f"HTTP {refused.status}"


class Client:
    """The gateway's public API for programs, with one control socket shared by its streams."""

    def __init__(
        self,
        gateway: str,
        api_key: str | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        max_reconnects: int = 8,
        read_timeout_s: float = 60.0,
    ) -> None:
        self._own_session = session is None
        self.session = session or aiohttp.ClientSession()
        self.api = SluiceClient(self.session, gateway, api_key)
        self.max_reconnects = max_reconnects
        self.read_timeout_s = read_timeout_s
        control_url = self.api.gateway.replace("http", "ws", 1) + "/v1/control"
        self.control = ControlSocket(self.session, control_url, self.api.headers)

    async def create(self, prompt: str | None = None, **request: Any) -> Stream:
        """Start a generation (the body of ``POST /v1/streams``); refusals raise StreamFailed."""
        body = {"model": "sim", **request}
        if prompt is not None:
            body["prompt"] = prompt
        try:
            return Stream(self, await self.api.create(**body))
        except StreamRefused as refused:
            raise StreamFailed(*_error_of(refused)) from None

    async def ask(self, prompt: str, **request: Any) -> str:
        """The whole answer to ``prompt`` as text."""
        return await (await self.create(prompt, **request)).text()

    async def close(self) -> None:
        await self.control.close()
        if self._own_session:
            await self.session.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
