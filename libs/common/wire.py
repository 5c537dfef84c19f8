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
    starting n streams cost O(n²). ``continuable`` names the models whose answers
    this runner can take over mid-way from the log.
    """

    runner_id: str
    slots_total: int
    slots_free: int
    models: list[str]
    running: list[str] = []
    stopping: bool = False
    full: bool = True
    continuable: list[str] = []


class Start(Wire, tag="start", frozen=True):
    """coordinator → runner: generate this stream now.

    ``epoch`` numbers the attempt: 0 is the first, and each continuation on another
    runner takes the next, which fences every earlier attempt out of the log.
    """

    submit: Submit
    queued_ms: float = 0.0
    epoch: int = 0


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
    """The stream ended normally or by cancel; the last entry of its log.

    A stream that moved between runners says how many tokens each attempt logged
    (``attempts``) and how many tokens continuations generated again (``recomputed``).
    """

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
    attempts: list[int] | None = None
    recomputed: int | None = None


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


class Fence(Wire, tag="fence", frozen=True):
    """Attempt ``epoch`` holds the stream now: every earlier attempt stops at once."""

    epoch: int


ControlMessage = Cancel | Pace | Fence


class ReaderLease(Wire, tag="lease", frozen=True):
    """streamer → runner: this stream has readers now."""

    readers: int
    streamer_id: str


class StatusChange(Wire, tag="status", frozen=True, omit_defaults=True):
    """A stream's status; ``continued_at`` is the last logged seq when the answer moved."""

    status: str
    position: int | None = None
    runner_id: str | None = None
    continued_at: int | None = None


class Handoff(Wire, tag="handoff", frozen=True):
    """runner → coordinator: this runner is stopping; move these running streams."""

    runner_id: str
    streams: list[str]


class HandoffReply(Wire, tag="handoff_reply", frozen=True):
    """The streams a coordinator will continue elsewhere; the runner drains the others."""

    moved: list[str]


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
handoff_codec: Codec[Handoff] = Codec(Handoff)
handoff_reply_codec: Codec[HandoffReply] = Codec(HandoffReply)
submit_json_encode = msgspec.json.Encoder().encode
submit_json_decode = msgspec.json.Decoder(Submit).decode
