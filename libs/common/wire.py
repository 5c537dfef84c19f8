"""Messages that cross a process boundary over NATS or into the Redis log.

One tagged union per subject, each with one encoder and one decoder built once.
A token batch is the same bytes on ``sluice.stream.<id>.tokens`` and in the log
entry, so a reader decodes live and replayed tokens with the same code.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

from libs.common.api import Message, Sampling, SimParams, chat_messages, prompt_text
from libs.common.channels import Channels, ToolCall
from libs.common.tooling import ToolParams


class Wire(msgspec.Struct, frozen=True, tag_field="k"):
    """Base of every wire message: the tag travels in field ``k``."""


class Submit(Wire, tag="submit", frozen=True):
    """gateway/streamer → coordinator: admit a validated request under a fresh id."""

    id: str
    tenant: str
    model: str
    max_tokens: int
    created_ns: int
    prompt: str | None = None
    messages: list[Message] | None = None
    parked: bool = False
    conversation_id: str | None = None
    supersede: bool = False
    debounce_ms: int = 0
    abandon_after_s: float | None = 30.0
    sim: SimParams | None = None
    sampling: Sampling | None = None
    tooling: ToolParams | None = None

    @property
    def prompt_text(self) -> str:
        return prompt_text(self.prompt, self.messages)

    def chat_messages(self) -> list[Message]:
        return chat_messages(self.prompt, self.messages)


class PromptBody(Wire, tag="prompt", frozen=True):
    """A large request's prompt or messages, parked in Redis beside a :class:`Submit`."""

    prompt: str | None = None
    messages: list[Message] | None = None


class Accepted(Wire, tag="accepted", frozen=True):
    status: str
    position: int | None = None


class Rejected(Wire, tag="rejected", frozen=True):
    type: str
    message: str
    retry_after_s: float | None = None


SubmitReply = Accepted | Rejected


class RunnerHeartbeat(Wire, tag="heartbeat", frozen=True):
    """runner → coordinators, every second (``full``) and on slot changes.

    Only the periodic beat lists the running streams: slot-change beats come in
    bursts when many streams start at once, and listing every stream in each made
    starting n streams cost O(n²).
    """

    runner_id: str
    slots_total: int
    slots_free: int
    models: list[str]
    running: list[str] = []
    stopping: bool = False
    full: bool = True


class Start(Wire, tag="start", frozen=True):
    """coordinator → runner: generate this stream now."""

    submit: Submit
    queued_ms: float = 0.0


class Started(Wire, tag="started", frozen=True):
    runner_id: str


class Refused(Wire, tag="refused", frozen=True):
    reason: str


StartReply = Started | Refused


class TokenBatch(Wire, tag="t", frozen=True, omit_defaults=True):
    """Tokens ``first .. first+len(texts)-1``; ``ts`` is the runner's emit time of the first (ns).

    ``channels`` is absent when every token is answer text (see :mod:`libs.common.channels`).
    """

    first: int
    texts: list[str]
    ts: int
    channels: Channels | None = None

    @property
    def last(self) -> int:
        return self.first + len(self.texts) - 1


class Done(Wire, tag="done", frozen=True, omit_defaults=True):
    """The stream ended normally or by cancel; the last entry of its log."""

    finish_reason: str
    tokens: int
    ttft_ms: float | None = None
    duration_ms: float | None = None
    tokens_after_cancel: int | None = None
    cancel_to_stop_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    tool_calls: list[ToolCall] | None = None


class Failed(Wire, tag="failed", frozen=True):
    """The stream ended in error; ``retryable`` tells the client to resume."""

    type: str
    message: str
    retryable: bool = False
    tokens: int = 0


TokensMessage = TokenBatch | Done | Failed
Terminal = Done | Failed


class Cancel(Wire, tag="cancel", frozen=True):
    """Stop generating; ``reason`` becomes the finish reason (cancelled, superseded, abandoned)."""

    reason: str = "cancelled"
    requested_ns: int = 0


class Pace(Wire, tag="pace", frozen=True):
    max_events_per_s: float


ControlMessage = Cancel | Pace


class ReaderLease(Wire, tag="lease", frozen=True):
    """streamer → runner: this stream has readers now."""

    readers: int
    streamer_id: str


class StatusChange(Wire, tag="status", frozen=True, omit_defaults=True):
    status: str
    position: int | None = None
    runner_id: str | None = None


LifecycleMessage = StatusChange

T = TypeVar("T")


class Codec(Generic[T]):
    """A pre-built msgpack encoder/decoder pair for one subject's union."""

    __slots__ = ("decode", "encode")

    def __init__(self, kind: type[T] | object) -> None:
        self.decode = msgspec.msgpack.Decoder(kind).decode
        self.encode = msgspec.msgpack.Encoder().encode


submit_codec: Codec[Submit] = Codec(Submit)
prompt_codec: Codec[PromptBody] = Codec(PromptBody)
submit_reply_codec: Codec[SubmitReply] = Codec(SubmitReply)
heartbeat_codec: Codec[RunnerHeartbeat] = Codec(RunnerHeartbeat)
start_codec: Codec[Start] = Codec(Start)
start_reply_codec: Codec[StartReply] = Codec(StartReply)
tokens_codec: Codec[TokensMessage] = Codec(TokensMessage)
control_codec: Codec[ControlMessage] = Codec(ControlMessage)
lease_codec: Codec[ReaderLease] = Codec(ReaderLease)
lifecycle_codec: Codec[LifecycleMessage] = Codec(LifecycleMessage)
