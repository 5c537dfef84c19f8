"""Public request and response bodies of the HTTP and WebSocket contract.

Validation is decoding: constraints live on the types, so a bad body fails in
:func:`decode_request` with msgspec's precise message, which becomes the 400's text.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, UnsetType

from libs.common.errors import InvalidRequest
from libs.common.tooling import (
    CallId,
    MessageToolCall,
    ResponseFormat,
    ToolChoice,
    ToolParams,
    Tools,
    check_tools,
    tool_params,
)

Status = Literal["queued", "running", "completed", "cancelled", "superseded", "abandoned", "failed"]
FINAL_STATUSES: frozenset[str] = frozenset(
    {"completed", "cancelled", "superseded", "abandoned", "failed"}
)

Name = Annotated[str, Meta(min_length=1, max_length=128)]
Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
"""Every integer a client sends fits 64 bits, as every wire format and backend expects."""

PROMPT_MAX_CHARS = 16 * 1024 * 1024
"""Far above the body limit's default: the limit an operator sets is the one that binds."""
METADATA_MAX_KEYS = 64
METADATA_MAX_DEPTH = 8
METADATA_MAX_BYTES = 16_384
_json = msgspec.json.Encoder()


def check_metadata(metadata: dict[str, Any]) -> None:
    """Bound a request's free-form ``metadata``: it is stored with the stream and sent on."""
    if len(metadata) > METADATA_MAX_KEYS:
        raise ValueError(f"`metadata` has more than {METADATA_MAX_KEYS} keys")
    _check_nesting(metadata, METADATA_MAX_DEPTH)
    if len(_json.encode(metadata)) > METADATA_MAX_BYTES:
        raise ValueError(f"`metadata` is larger than {METADATA_MAX_BYTES} bytes as JSON")


def _check_nesting(value: Any, depth_left: int) -> None:
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise ValueError("`metadata` holds an integer beyond 64 bits")
    if isinstance(value, dict | list):
        if depth_left == 0:
            raise ValueError(f"`metadata` is nested deeper than {METADATA_MAX_DEPTH} levels")
        for item in value.values() if isinstance(value, dict) else value:
            _check_nesting(item, depth_left - 1)


class SimParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Shape of the simulated model's answer; every field optional."""

    ttft_ms: Annotated[int, Meta(ge=0, le=120_000)] = 300
    tokens_per_s: Annotated[float, Meta(gt=0, le=1_000_000)] = 50.0
    tokens: Annotated[int, Meta(ge=0, le=1_000_000)] = 100
    seed: Int64 = 0
    reasoning_tokens: Annotated[int, Meta(ge=0, le=1_000_000)] = 0
    """Thinking tokens streamed on the reasoning channel before the answer."""


class ContentPart(msgspec.Struct, frozen=True):
    type: str
    text: str = ""


class Message(msgspec.Struct, frozen=True, omit_defaults=True):
    """One chat message; an assistant's may hold tool calls instead of content."""

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None
    tool_calls: Annotated[list[MessageToolCall], Meta(max_length=128)] | None = None
    tool_call_id: CallId | None = None
    name: Name | None = None

    def __post_init__(self) -> None:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("`content` is required unless an assistant message has `tool_calls`")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("`tool_call_id` is required on, and only on, a `tool` message")

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if part.type == "text")


def prompt_text(prompt: str | None, messages: list[Message] | None) -> str:
    """The text the simulated model answers: the prompt, or the messages joined."""
    if prompt is not None:
        return prompt
    return "\n".join(f"{m.role}: {m.text}" for m in messages or ())


def chat_messages(prompt: str | None, messages: list[Message] | None) -> list[Message]:
    """The request as a chat: its messages, or its prompt as the one user message."""
    if messages is not None:
        return messages
    return [Message(role="user", content=prompt or "")]


StopSequences = Annotated[str, Meta(max_length=256)] | Annotated[list[str], Meta(max_length=4)]


class Sampling(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """Parameters handed to an upstream model as they are; ``sim`` ignores them."""

    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    stop: StopSequences | None = None
    presence_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    seed: Int64 | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    user: Annotated[str, Meta(max_length=256)] | None = None


class StreamRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Body of ``POST /v1/streams`` and of a WebSocket ``submit`` frame."""

    model: Name = "sim"
    messages: Annotated[list[Message], Meta(min_length=1, max_length=1024)] | None = None
    prompt: Annotated[str, Meta(max_length=PROMPT_MAX_CHARS)] | None = None
    max_tokens: Annotated[int, Meta(ge=1, le=1_000_000)] = 256
    conversation_id: Name | None = None
    supersede: bool | None = None
    debounce_ms: Annotated[int, Meta(ge=0, le=60_000)] = 0
    abandon_after_s: Annotated[float, Meta(gt=0, le=86400)] | UnsetType | None = UNSET
    metadata: dict[str, Any] = {}
    sim: SimParams | None = None
    sampling: Sampling | None = None
    tools: Tools | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("exactly one of `prompt` and `messages` is required")
        check_metadata(self.metadata)
        check_tools(self.tools, self.tool_choice)

    @property
    def tooling(self) -> ToolParams | None:
        return tool_params(
            self.tools, self.tool_choice, self.parallel_tool_calls, self.response_format
        )

    @property
    def prompt_text(self) -> str:
        return prompt_text(self.prompt, self.messages)

    def chat_messages(self) -> list[Message]:
        return chat_messages(self.prompt, self.messages)

    def resolved_supersede(self) -> bool:
        return self.conversation_id is not None and self.supersede is not False

    def resolved_abandon_after_s(self, default: float) -> float | None:
        return default if isinstance(self.abandon_after_s, UnsetType) else self.abandon_after_s


class CreatedStream(msgspec.Struct):
    """201 answer of ``POST /v1/streams``."""

    id: str
    status: Status
    token: str
    events_url: str
    control_url: str
    position: int | None = None


class ErrorBody(msgspec.Struct, omit_defaults=True):
    type: str
    message: str
    correlation_id: str | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


T = TypeVar("T")


def decode_with(decoder: msgspec.json.Decoder[T], body: str | bytes) -> T:
    """Decode and validate ``body``; a bad one raises :class:`InvalidRequest` with the reason."""
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(str(exc)) from None
    except RecursionError:
        raise InvalidRequest("the body is nested too deeply") from None
    except UnicodeDecodeError:
        raise InvalidRequest("the body is not valid UTF-8") from None


_request_decoder = msgspec.json.Decoder(StreamRequest)


def decode_request(body: bytes) -> StreamRequest:
    return decode_with(_request_decoder, body)


def convert_request(fields: dict[str, Any]) -> StreamRequest:
    """Validate an already-parsed object (a WebSocket frame's fields) as a stream request."""
    try:
        return msgspec.convert(fields, StreamRequest)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(str(exc)) from None


class StreamInfo(msgspec.Struct, omit_defaults=True):
    """Answer of ``GET /v1/streams/{id}``."""

    id: str
    status: str
    model: str
    tokens: int
    created_at: float
    finish_reason: str | None = None
    ttft_ms: float | None = None
    duration_ms: float | None = None
    conversation_id: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    tokens_after_cancel: int | None = None
    cancel_to_stop_ms: float | None = None
    tokens_unread: int | None = None
    error: ErrorBody | None = None


Ref = Annotated[str, Meta(max_length=128)] | None
StreamRef = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
"""A stream id as a client may name one: nothing that could change a subject or key."""


class ControlFrame(msgspec.Struct, frozen=True, tag_field="type", forbid_unknown_fields=True):
    """Base of the client → server frames on ``/v1/control``."""


class SubmitFrame(StreamRequest, tag_field="type", tag="submit", frozen=True):
    ref: Ref = None


class CancelFrame(ControlFrame, tag="cancel", frozen=True):
    stream_id: StreamRef
    ref: Ref = None


class FeedbackFrame(ControlFrame, tag="feedback", frozen=True):
    stream_id: StreamRef
    rating: Literal[1, -1]
    comment: Annotated[str, Meta(max_length=4000)] = ""
    ref: Ref = None


class PaceFrame(ControlFrame, tag="pace", frozen=True):
    stream_id: StreamRef
    max_events_per_s: Annotated[float, Meta(gt=0, le=10_000)]
    ref: Ref = None


class PingFrame(ControlFrame, tag="ping", frozen=True):
    ref: Ref = None


ClientFrame = SubmitFrame | CancelFrame | FeedbackFrame | PaceFrame | PingFrame
_frame_decoder = msgspec.json.Decoder(ClientFrame)


def decode_frame(text: str | bytes) -> ClientFrame:
    """Decode one control frame; a malformed one raises :class:`InvalidRequest`."""
    frame: ClientFrame = decode_with(_frame_decoder, text)
    return frame


class ServerFrame(msgspec.Struct, tag_field="type", omit_defaults=True):
    """Base of the server → client frames on ``/v1/control``."""


class AckFrame(ServerFrame, tag="ack", omit_defaults=True):
    """A frame was done; a ``submit`` ack carries the same fields as the 201 of POST."""

    ref: str | None = None
    stream_id: str | None = None
    status: str | None = None
    id: str | None = None
    token: str | None = None
    events_url: str | None = None
    control_url: str | None = None
    position: int | None = None


class ErrorFrame(ServerFrame, tag="error", omit_defaults=True):
    error: ErrorBody
    ref: str | None = None
    retry_after_s: float | None = None


class StatusFrame(ServerFrame, tag="status", omit_defaults=True):
    """A status change of a stream submitted or cancelled on this socket."""

    stream_id: str
    status: str
    position: int | None = None


class PongFrame(ServerFrame, tag="pong", omit_defaults=True):
    ref: str | None = None


class _FrameRef(msgspec.Struct):
    ref: Ref = None


_ref_decoder = msgspec.json.Decoder(_FrameRef)


def frame_ref(text: str | bytes) -> str | None:
    """The ``ref`` of a frame that failed to decode, if it has a readable one, for its error."""
    try:
        return decode_with(_ref_decoder, text).ref
    except InvalidRequest:
        return None
