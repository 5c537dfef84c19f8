"""What a stream tells its reader, as typed values instead of raw SSE frames.

A token carries a ``channel`` (``text`` today); a later kind of content, such as
reasoning or a tool call, is one more channel value, not a new event type, so code
that switches on :class:`Token` keeps working and filters on ``channel``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec


class TokenFrame(msgspec.Struct, frozen=True):
    """The JSON of a ``token`` event; ``channel`` is absent on plain text."""

    seq: int
    n: int
    text: str
    ts: int
    channel: str = "text"


class DoneFrame(msgspec.Struct, frozen=True):
    """The JSON of a ``done`` event."""

    finish_reason: str
    tokens: int
    ttft_ms: float | None = None
    duration_ms: float | None = None
    cancel_to_stop_ms: float | None = None


class ErrorFrame(msgspec.Struct, frozen=True):
    """The JSON of an ``error`` event."""

    type: str
    message: str
    retryable: bool = False


@dataclass(frozen=True, slots=True)
class Status:
    """The stream's state before and between tokens: queued (with position) or running."""

    status: str
    position: int | None = None


@dataclass(frozen=True, slots=True)
class Token:
    """``n`` consecutive tokens ending at index ``seq``, emitted by the model at ``ts`` (ns)."""

    seq: int
    n: int
    text: str
    ts: int
    channel: str = "text"


@dataclass(frozen=True, slots=True)
class Reconnecting:
    """The connection dropped; the stream resumes after token ``after``."""

    after: int
    attempt: int
    reason: str


@dataclass(frozen=True, slots=True)
class Done:
    """The stream ended; ``finish_reason`` says why (stop, length, cancelled, superseded...)."""

    finish_reason: str
    tokens: int
    ttft_ms: float | None
    duration_ms: float | None
    cancel_to_stop_ms: float | None


StreamEvent = Status | Token | Reconnecting | Done

_token = msgspec.json.Decoder(TokenFrame)
_done = msgspec.json.Decoder(DoneFrame)
_error = msgspec.json.Decoder(ErrorFrame)
_status = msgspec.json.Decoder(dict[str, Any])


def decode_token(data: str) -> Token:
    frame = _token.decode(data)
    return Token(frame.seq, frame.n, frame.text, frame.ts, frame.channel)


def decode_done(data: str) -> Done:
    frame = _done.decode(data)
    return Done(
        frame.finish_reason,
        frame.tokens,
        frame.ttft_ms,
        frame.duration_ms,
        frame.cancel_to_stop_ms,
    )


def decode_error(data: str) -> ErrorFrame:
    return _error.decode(data)


def decode_status(data: str) -> Status:
    fields = _status.decode(data)
    position = fields.get("position")
    return Status(str(fields.get("status", "")), position if isinstance(position, int) else None)
