"""OpenAI's dialect of a reader's events: chat completion chunks, or one gathered answer.

Errors use OpenAI's body, with ``type`` set to sluice's own error type.
"""

from __future__ import annotations

import re
import time

import msgspec

from libs.common.channels import REASONING, Channel, Channels, ToolCallDelta, runs
from libs.common.errors import Unavailable
from libs.common.openai_wire import (
    ChatCompletionChunk,
    ChunkChoice,
    CompletionMessage,
    CompletionTokensDetails,
    Delta,
    ErrorDetail,
    ErrorResponse,
    FunctionDelta,
    ToolCallChunk,
    Usage,
)
from libs.common.tooling import FunctionCall, MessageToolCall
from libs.common.wire import Done, Failed, StatusChange

DONE = b"data: [DONE]\n\n"
PING = b": ping\n\n"
_PARAM = re.compile(r"`\$\.([A-Za-z_]\w*)")
_json = msgspec.json.Encoder()


def _data(payload: object) -> bytes:
    return b"data: " + _json.encode(payload) + b"\n\n"


def error_body(error_type: str, message: str) -> ErrorResponse:
    """OpenAI's error body; ``param`` names the field a decode error points at."""
    found = _PARAM.search(message)
    return ErrorResponse(ErrorDetail(message, error_type, found.group(1) if found else None))


def usage_of(done: Done) -> Usage:
    prompt = done.prompt_tokens or 0
    completion = done.tokens if done.completion_tokens is None else done.completion_tokens
    details = None
    if done.reasoning_tokens is not None:
        details = CompletionTokensDetails(reasoning_tokens=done.reasoning_tokens)
    return Usage(prompt, completion, prompt + completion, details)


def delta_of(text: str, channel: Channel | None) -> Delta:
    """The delta of a run of one channel: content, reasoning_content or one tool call's part."""
    if channel is None:
        return Delta(content=text)
    if channel == REASONING:
        return Delta(reasoning_content=text)
    assert isinstance(channel, ToolCallDelta)
    first = channel.id is not None
    call = ToolCallChunk(
        index=channel.index,
        id=channel.id,
        type="function" if first else None,
        function=FunctionDelta(name=channel.name, arguments=text),
    )
    return Delta(tool_calls=[call])


def shutdown_message(stream_id: str) -> str:
    return f"the streamer is shutting down; resume on /v1/streams/{stream_id}/events"


class ChunkFrames:
    """``stream: true``: the role chunk at once, content chunks, the finish chunk, ``[DONE]``.

    Content chunks carry ``id: <last token index>`` so a client can resume on the
    native endpoint with Last-Event-ID; OpenAI clients ignore the field.
    """

    def __init__(self, stream_id: str, model: str, include_usage: bool) -> None:
        self._template = ChatCompletionChunk(id=stream_id, created=int(time.time()), model=model)
        self._include_usage = include_usage

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> bytes:
        return _data(msgspec.structs.replace(self._template, choices=choices, usage=usage))

    def opening(self) -> bytes:
        return self._chunk([ChunkChoice(delta=Delta(role="assistant"))])

    def status(self, change: StatusChange) -> bytes:
        return b""

    def tokens(self, last_seq: int, texts: list[str], ts: int, channels: Channels | None) -> bytes:
        if channels is None:
            return b"id: %d\n" % last_seq + self._chunk(
                [ChunkChoice(delta=Delta(content="".join(texts)))]
            )
        frames = b""
        seq = last_seq - len(texts)
        for run in runs(texts, channels):
            seq += run.count
            frames += b"id: %d\n" % seq + self._chunk(
                [ChunkChoice(delta=delta_of(run.text, run.channel))]
            )
        return frames

    def terminal(self, terminal: Done | Failed, last_seq: int) -> bytes:
        if isinstance(terminal, Failed):
            return _data(error_body(terminal.type, terminal.message))
        frames = self._chunk([ChunkChoice(finish_reason=terminal.finish_reason)])
        if self._include_usage:
            frames += self._chunk([], usage_of(terminal))
        return frames + DONE

    def ping(self) -> bytes:
        return PING

    def reconnect(self) -> bytes:
        return _data(error_body(Unavailable.type, shutdown_message(self._template.id)))


class CompletionFrames:
    """``stream: false``: nothing goes out before the end; the answer is gathered here."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.reasoning: list[str] = []
        self.end: Done | Failed | None = None

    def opening(self) -> bytes:
        return b""

    def status(self, change: StatusChange) -> bytes:
        return b""

    def tokens(self, last_seq: int, texts: list[str], ts: int, channels: Channels | None) -> bytes:
        if channels is None:
            self.texts.extend(texts)
            return b""
        for text, channel in zip(texts, channels, strict=True):
            if channel is None:
                self.texts.append(text)
            elif channel == REASONING:
                self.reasoning.append(text)
        return b""  # tool calls come whole with the end: Done.tool_calls

    def answer(self, done: Done) -> CompletionMessage:
        """The whole answer, as the chunks of a streamed one add up."""
        calls = [
            MessageToolCall(call.id, FunctionCall(call.name, call.arguments))
            for call in done.tool_calls or ()
        ]
        return CompletionMessage(
            content="".join(self.texts) if self.texts or not calls else None,
            reasoning_content="".join(self.reasoning) if self.reasoning else None,
            tool_calls=calls or None,
        )

    def terminal(self, terminal: Done | Failed, last_seq: int) -> bytes:
        self.end = terminal
        return b""

    def ping(self) -> bytes:
        return b""

    def reconnect(self) -> bytes:
        return b""
