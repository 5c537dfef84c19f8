"""Model backends: each turns a :class:`~libs.common.wire.Submit` into tokens pushed to a sink.

A backend pushes rather than yields so that one loop can serve many sequences at
once, as a batched model server does (see :mod:`.sim`). It is cancelled by
cancelling the task that awaits :meth:`Backend.generate`, and must release the
model at once when that happens (close the upstream connection).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Protocol

from libs.common.channels import Channel
from libs.common.wire import Submit


@dataclass(slots=True)
class Outcome:
    """What a backend reports besides its tokens, filled in as it goes."""

    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None


class TokenSink(Protocol):
    """Where a backend delivers a generation's tokens."""

    def push(self, text: str) -> None:
        """Take the next token; never waits."""
        ...

    def push_channel(self, text: str, channel: Channel) -> None:
        """Take the next token, of the reasoning or a tool call; never waits."""
        ...

    def full(self) -> bool:
        """True while the generation cannot take more: stop pulling from the model."""
        ...

    async def space(self) -> None:
        """Return once the sink is no longer full."""
        ...


class Backend(Protocol):
    async def generate(self, submit: Submit, outcome: Outcome, sink: TokenSink) -> None:
        """Push the answer's tokens into ``sink`` in order; set ``outcome`` before returning."""
        ...

    async def close(self) -> None: ...


Piece = tuple[str, Channel | None]
"""A token's text and its channel (None: answer text)."""


async def pump(pieces: AsyncGenerator[Piece], sink: TokenSink) -> None:
    """Feed a backend's pieces to ``sink``, pausing the model while the sink is full.

    The iterator is closed however this ends, so a cancel closes its upstream at once.
    """
    async with aclosing(pieces):
        async for text, channel in pieces:
            if channel is None:
                sink.push(text)
            else:
                sink.push_channel(text, channel)
            if sink.full():
                await sink.space()
