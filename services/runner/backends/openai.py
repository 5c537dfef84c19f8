"""The ``openai`` backend: any OpenAI-compatible server (vLLM, TGI, llama.cpp, Ollama, OpenAI).

It streams chat completions over aiohttp. Refusals before the first token (429, 5xx,
an unreachable server) are retried up to ``max_retries`` times, since nothing has
reached the client yet; after the first token any failure ends the stream, because
a retry would repeat tokens. Every failure becomes an :class:`UpstreamError` that
names what happened. Cancelling the task that awaits :meth:`OpenAIBackend.generate`
closes the upstream connection at once: that is how the model server learns to stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator

import aiohttp
import msgspec

from libs.common.channels import REASONING, ToolCallDelta
from libs.common.errors import UpstreamError
from libs.common.openai_wire import (
    ChatRequest,
    Delta,
    ErrorResponse,
    StreamOptions,
    UpstreamChunk,
    Usage,
)
from libs.common.retry import Backoff
from libs.common.settings import ModelSpec
from libs.common.sse import SSEParser
from libs.common.wire import Submit
from services.runner.backends import Outcome, Piece, TokenSink, pump

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 5.0
ERROR_BODY_BYTES = 4096
_encode = msgspec.json.Encoder().encode
_decode_chunk = msgspec.json.Decoder(UpstreamChunk).decode
_decode_error = msgspec.json.Decoder(ErrorResponse).decode


class Refusal(Exception):
    """The upstream would not start the answer.

    ``retry_after_s`` is None when a retry cannot help, else the wait it asked for (0: back off).
    ``detail`` (the upstream's own words, its URL) is for the logs only.
    """

    def __init__(self, message: str, retry_after_s: float | None, detail: str) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s
        self.detail = detail


class OpenAIBackend:
    def __init__(self, spec: ModelSpec) -> None:
        self._spec = spec
        self._url = spec.base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if key := spec.upstream_key():
            self._headers["Authorization"] = f"Bearer {key}"
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=spec.connect_timeout_s, sock_read=spec.read_timeout_s
        )
        self._session: aiohttp.ClientSession | None = None

    async def generate(self, submit: Submit, outcome: Outcome, sink: TokenSink) -> None:
        await pump(self._stream(submit, outcome), sink)

    async def _stream(self, submit: Submit, outcome: Outcome) -> AsyncGenerator[Piece]:
        request = ChatRequest(
            model=self._spec.upstream_model or submit.model,
            messages=submit.chat_messages(),
            max_tokens=submit.max_tokens,
            stream=True,
            stream_options=StreamOptions(include_usage=True),
            **(msgspec.structs.asdict(submit.sampling) if submit.sampling else {}),
            **(msgspec.structs.asdict(submit.tooling) if submit.tooling else {}),
        )
        response = await self._open(_encode(request), submit.id)
        try:
            async for piece in self._tokens(response, outcome):
                yield piece
        except BaseException:
            response.close()
            raise
        response.release()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def _open(self, body: bytes, stream_id: str) -> aiohttp.ClientResponse:
        """POST the request, retrying refusals that may pass; the 200 response, ready to read."""
        attempt, backoff = 1, Backoff(first_s=0.1, cap_s=1.0)
        while True:
            try:
                return await self._post(body)
            except Refusal as refusal:
                if refusal.retry_after_s is None or attempt > self._spec.max_retries:
                    tries = f" (after {attempt} attempts)" if attempt > 1 else ""
                    raise UpstreamError(refusal.message + tries, detail=refusal.detail) from None
                delay = refusal.retry_after_s or backoff.next_s()
                log.warning(
                    "%s (%s); retry %d of %d in %.2fs",
                    refusal.message,
                    refusal.detail,
                    attempt,
                    self._spec.max_retries,
                    delay,
                    extra={"stream_id": stream_id},
                )
            await asyncio.sleep(delay)
            attempt += 1

    async def _post(self, body: bytes) -> aiohttp.ClientResponse:
        try:
            response = await self._client().post(self._url, data=body, headers=self._headers)
        except aiohttp.ClientError as exc:
            detail = f"{self._url}: {_describe(exc)}"
            raise Refusal("cannot reach the model server", 0.0, detail) from None
        if response.status == 200:
            return response
        try:
            detail = await _error_text(response)
        finally:
            response.release()
        message = f"the model server answered {response.status}"
        if response.status not in RETRY_STATUSES:
            raise Refusal(message, None, detail)
        raise Refusal(message, _retry_after(response), detail)

    async def _tokens(
        self, response: aiohttp.ClientResponse, outcome: Outcome
    ) -> AsyncIterator[Piece]:
        """The answer's pieces of every channel; a failure says how many had arrived."""
        pieces = 0
        try:
            async for piece in self._contents(response, outcome):
                pieces += 1
                yield piece
        except UpstreamError as exc:
            raise UpstreamError(
                f"{exc.message} (after {pieces} tokens)", detail=exc.detail
            ) from None

    async def _contents(
        self, response: aiohttp.ClientResponse, outcome: Outcome
    ) -> AsyncIterator[Piece]:
        """The pieces of each chunk until ``[DONE]``, or until the end after a finish reason."""
        finished = False
        async for payload in self._events(response):
            if payload == "[DONE]":
                return
            chunk = _parse(payload)
            if chunk.usage is not None:
                _take_usage(chunk.usage, outcome)
            for choice in chunk.choices:
                if choice.finish_reason:
                    outcome.finish_reason = choice.finish_reason
                    finished = True
                for piece in _pieces(choice.delta):
                    yield piece
        if not finished:
            raise UpstreamError("the model server ended the stream without finishing the answer")

    async def _events(self, response: aiohttp.ClientResponse) -> AsyncIterator[str]:
        """The ``data`` of each server-sent event; a line that is not SSE is an error."""
        parser = SSEParser(on_unknown_field=_not_sse)
        while chunk := await self._read(response):
            for event in parser.feed(chunk):
                yield event.data

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        """The next bytes of the body; empty at its end."""
        try:
            return await response.content.readany()
        except TimeoutError:
            raise UpstreamError(
                f"the model server sent nothing for {self._spec.read_timeout_s:g}s"
            ) from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise UpstreamError("the model server's stream broke", detail=_describe(exc)) from None


def _not_sse(line: str) -> None:
    raise UpstreamError(
        "the model server sent a line that is not server-sent events", detail=repr(line[:80])
    )


def _pieces(delta: Delta) -> list[Piece]:
    """What one delta adds, channel by channel: reasoning, answer text, then tool calls."""
    pieces: list[Piece] = []
    reasoning = delta.reasoning_content or delta.reasoning
    if reasoning:
        pieces.append((reasoning, REASONING))
    if delta.content:
        pieces.append((delta.content, None))
    for call in delta.tool_calls or ():
        function = call.function
        name = function.name if function is not None else None
        arguments = (function.arguments if function is not None else None) or ""
        if arguments or call.id or name:
            pieces.append((arguments, ToolCallDelta(call.index, call.id or None, name or None)))
    return pieces


def _take_usage(usage: Usage, outcome: Outcome) -> None:
    outcome.prompt_tokens = usage.prompt_tokens
    outcome.completion_tokens = usage.completion_tokens
    details = usage.completion_tokens_details
    if details is not None:
        outcome.reasoning_tokens = details.reasoning_tokens


def _parse(payload: str) -> UpstreamChunk:
    try:
        chunk = _decode_chunk(payload)
    except msgspec.DecodeError as exc:
        detail = f"{payload[:80]!r} ({exc})"
        raise UpstreamError("the model server sent garbage", detail=detail) from None
    if chunk.error is not None:
        detail = chunk.error if isinstance(chunk.error, str) else chunk.error.message
        raise UpstreamError("the model server reported an error mid-stream", detail=detail)
    return chunk


async def _error_text(response: aiohttp.ClientResponse) -> str:
    """The upstream's own words for a refusal: its error message, else the start of its body."""
    try:
        raw = await response.content.read(ERROR_BODY_BYTES)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"(body unreadable: {_describe(exc)})"
    try:
        return _decode_error(raw).error.message or response.reason or ""
    except msgspec.DecodeError:
        return raw.decode(errors="replace").strip()[:200] or response.reason or ""


def _retry_after(response: aiohttp.ClientResponse) -> float:
    """The upstream's ``Retry-After`` in seconds, capped; 0 means use the backoff."""
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(response.headers.get("Retry-After", "0"))))
    except ValueError:
        return 0.0


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
