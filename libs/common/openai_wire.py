"""OpenAI chat-completions bodies, in both directions.

The streamer decodes :class:`ChatRequest` and answers chunks, completions and errors;
the runner's ``openai`` backend sends a :class:`ChatRequest` upstream and decodes the
chunks it gets back. One set of Structs for both sides keeps them in agreement.
A request field sluice neither honours nor passes to the model (``logprobs``, ``n``
above 1, ...) is refused with a 400 that names it: ignoring it would silently
answer a different question. Passed through as they are: the :class:`Sampling`
fields (``temperature``, ``top_p``, ``stop``, penalties, ``seed``,
``reasoning_effort``, ``user``) and the tool fields of :class:`ToolParams`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from libs.common.api import (
    Message,
    Name,
    Sampling,
    SimParams,
    StreamRequest,
    check_metadata,
    decode_with,
)
from libs.common.errors import InvalidRequest
from libs.common.tooling import (
    MessageToolCall,
    ResponseFormat,
    ToolChoice,
    Tools,
    check_tools,
)

TokenLimit = Annotated[int, Meta(ge=1, le=1_000_000)]


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = False


SAMPLING_FIELDS = tuple(field.name for field in msgspec.structs.fields(Sampling))


class ChatRequest(Sampling, frozen=True, omit_defaults=True, kw_only=True):
    """Body of ``POST /v1/chat/completions``: the parameters of :class:`Sampling`, the
    OpenAI fields, then sluice's optional extras; any other field is refused.
    """

    model: Name
    messages: Annotated[list[Message], Meta(min_length=1, max_length=1024)]
    max_tokens: TokenLimit | None = None
    max_completion_tokens: TokenLimit | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Meta(ge=1, le=1)] = 1
    tools: Tools | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    metadata: dict[str, Any] = {}
    sim: SimParams | None = None
    conversation_id: Name | None = None
    supersede: bool | None = None
    debounce_ms: Annotated[int, Meta(ge=0, le=60_000)] = 0
    abandon_after_s: Annotated[float, Meta(gt=0, le=86400)] | UnsetType | None = UNSET

    def __post_init__(self) -> None:
        check_metadata(self.metadata)
        check_tools(self.tools, self.tool_choice)

    @property
    def sampling(self) -> Sampling | None:
        """Just the decoding parameters, or None when the request sets none."""
        given = {name: getattr(self, name) for name in SAMPLING_FIELDS}
        return Sampling(**given) if any(v is not None for v in given.values()) else None

    @property
    def include_usage(self) -> bool:
        return self.stream and self.stream_options is not None and self.stream_options.include_usage

    def stream_request(self) -> StreamRequest:
        """The same request in sluice's own terms; ``max_completion_tokens`` wins over ``max_tokens``."""
        limit = self.max_completion_tokens or self.max_tokens
        fields: dict[str, Any] = {} if limit is None else {"max_tokens": limit}
        return StreamRequest(
            model=self.model,
            messages=self.messages,
            conversation_id=self.conversation_id,
            supersede=self.supersede,
            debounce_ms=self.debounce_ms,
            abandon_after_s=self.abandon_after_s,
            metadata=self.metadata,
            sim=self.sim,
            sampling=self.sampling,
            tools=self.tools,
            tool_choice=self.tool_choice,
            parallel_tool_calls=self.parallel_tool_calls,
            response_format=self.response_format,
            **fields,
        )


class FunctionDelta(msgspec.Struct, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class ToolCallChunk(msgspec.Struct, omit_defaults=True):
    """A fragment of a streamed tool call; ``id``, ``type`` and the name come on its first."""

    index: int
    id: str | None = None
    type: str | None = None
    function: FunctionDelta | None = None


class Delta(msgspec.Struct, omit_defaults=True):
    """What a chunk adds; upstreams spell thinking ``reasoning_content`` or ``reasoning``."""

    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallChunk] | None = None


class ChunkChoice(msgspec.Struct):
    index: int = 0
    delta: Delta = msgspec.field(default_factory=Delta)
    finish_reason: str | None = None


class CompletionTokensDetails(msgspec.Struct, omit_defaults=True):
    reasoning_tokens: int | None = None


class Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    completion_tokens_details: CompletionTokensDetails | None = None


class ChatCompletionChunk(msgspec.Struct):
    """One ``data:`` line of a streamed answer; the usage chunk has no choices."""

    id: str = ""
    object: str = "chat.completion.chunk"
    created: int = 0
    model: str = ""
    choices: list[ChunkChoice] = []
    usage: Usage | None = None


class ErrorDetail(msgspec.Struct):
    """OpenAI's error object; ``type`` carries sluice's error type unchanged."""

    message: str = ""
    type: str | None = None
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(msgspec.Struct):
    error: ErrorDetail


class UpstreamChunk(ChatCompletionChunk):
    """A chunk as an upstream may send it, including an error reported mid-stream."""

    error: ErrorDetail | str | None = None


class CompletionMessage(msgspec.Struct):
    """The answer of a ``stream: false`` request: what the chunks of a streamed one add up to."""

    content: str | None
    role: str = "assistant"
    reasoning_content: str | None = None
    tool_calls: list[MessageToolCall] | None = None


class CompletionChoice(msgspec.Struct):
    message: CompletionMessage
    finish_reason: str | None
    index: int = 0


class ChatCompletion(msgspec.Struct):
    """The whole answer of a ``stream: false`` request."""

    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    object: str = "chat.completion"


class ModelCard(msgspec.Struct):
    id: str
    created: int = 0
    object: str = "model"
    owned_by: str = "sluice"


class ModelList(msgspec.Struct):
    data: list[ModelCard]
    object: str = "list"


_chat_request_decoder = msgspec.json.Decoder(ChatRequest)
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(\w+)`$")


def decode_chat_request(body: bytes) -> ChatRequest:
    """Decode and validate a chat request; a field sluice cannot honour gets its own words."""
    try:
        return decode_with(_chat_request_decoder, body)
    except InvalidRequest as error:
        unknown = _UNKNOWN_FIELD.match(error.message)
        if unknown is None:
            raise
        raise InvalidRequest(
            f"sluice does not support the field `{unknown.group(1)}`: it would be ignored,"
            f" so the request is refused - at `$.{unknown.group(1)}`"
        ) from None
