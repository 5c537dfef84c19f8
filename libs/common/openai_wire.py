"""OpenAI chat-completions bodies, in both directions.

The streamer decodes :class:`ChatRequest` and answers chunks, completions and errors;
the runner's ``openai`` backend sends a :class:`ChatRequest` upstream and decodes the
chunks it gets back. One set of Structs for both sides keeps them in agreement.
Unknown request fields (``temperature``, ``user``, ...) are accepted and ignored, so
clients that send them unasked keep working.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from libs.common.api import (
    Message,
    Name,
    Sampling,
    SimParams,
    StreamRequest,
    decode_with,
)

TokenLimit = Annotated[int, Meta(ge=1, le=1_000_000)]


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = False


SAMPLING_FIELDS = tuple(field.name for field in msgspec.structs.fields(Sampling))


class ChatRequest(
    Sampling, frozen=True, omit_defaults=True, kw_only=True, forbid_unknown_fields=False
):
    """Body of ``POST /v1/chat/completions``: the decoding parameters of :class:`Sampling`,
    the OpenAI fields, then sluice's optional extras; other OpenAI fields are ignored.
    """

    model: Name
    messages: Annotated[list[Message], Meta(min_length=1, max_length=1024)]
    max_tokens: TokenLimit | None = None
    max_completion_tokens: TokenLimit | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Meta(ge=1, le=1)] = 1
    metadata: dict[str, Any] = {}
    sim: SimParams | None = None
    conversation_id: Name | None = None
    supersede: bool | None = None
    debounce_ms: Annotated[int, Meta(ge=0, le=60_000)] = 0
    abandon_after_s: Annotated[float, Meta(gt=0, le=86400)] | UnsetType | None = UNSET

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
            **fields,
        )


class ContinuationRequest(ChatRequest, frozen=True, omit_defaults=True, kw_only=True):
    """An upstream request that continues the final (assistant) message instead of
    answering it: vLLM's and SGLang's chat-template flags."""

    continue_final_message: bool
    add_generation_prompt: bool


class Delta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None


class ChunkChoice(msgspec.Struct):
    index: int = 0
    delta: Delta = msgspec.field(default_factory=Delta)
    finish_reason: str | None = None


class Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


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
    content: str
    role: str = "assistant"


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


def decode_chat_request(body: bytes) -> ChatRequest:
    return decode_with(_chat_request_decoder, body)
