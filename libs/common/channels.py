"""What a token is besides answer text: reasoning, or a fragment of a tool call.

A :class:`~libs.common.wire.TokenBatch` whose tokens are all answer text carries no
channels at all, so text costs nothing extra on the hot path. Otherwise its
``channels`` list runs parallel to ``texts``: ``None`` for answer text,
:data:`REASONING` for thinking tokens, or a :class:`ToolCallDelta` saying which tool
call the token's text (an argument fragment) belongs to. Tokens of every channel are
numbered in one sequence, so resume, replay and cancel treat them all alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import msgspec

REASONING: Literal["reasoning"] = "reasoning"


class ToolCallDelta(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
    """The token is a fragment of tool call ``index``'s arguments; ``id`` and ``name`` ride
    on the call's first fragment, as upstreams send them."""

    index: int
    id: str | None = None
    name: str | None = None


Channel = Literal["reasoning"] | ToolCallDelta
Channels = list[Channel | None]
"""One entry per token; ``None`` is answer text."""


def joined(
    channels: Channels | None, count: int, more: Channels | None, skip: int, more_count: int
) -> Channels | None:
    """The channels of ``count`` tokens, then of ``more_count`` tokens from ``more[skip:]``.

    None while all are answer text; ``channels`` may be extended in place. Call it
    before the texts themselves are joined.
    """
    if channels is None and more is None:
        return None
    if channels is None:
        channels = [None] * count
    channels.extend([None] * more_count if more is None else more[skip : skip + more_count])
    return channels


class ToolCall(msgspec.Struct, frozen=True):
    """A finished tool call: its id, the function's name and its whole JSON arguments."""

    id: str
    name: str
    arguments: str


class Run(msgspec.Struct, frozen=True):
    """Consecutive tokens of one channel, joined: what one event or chunk carries."""

    count: int
    text: str
    channel: Channel | None


def runs(texts: Sequence[str], channels: Sequence[Channel | None]) -> Iterator[Run]:
    """The tokens grouped into runs of one channel, in order.

    Fragments of the same tool call join one run, keeping the ``id`` and ``name`` of
    the run's first fragment; a fragment that brings an id of its own starts a new run.
    """
    start = 0
    for end in range(1, len(texts) + 1):
        if end < len(texts) and _continues(channels[start], channels[end]):
            continue
        yield Run(end - start, "".join(texts[start:end]), channels[start])
        start = end


def _continues(first: Channel | None, later: Channel | None) -> bool:
    if isinstance(first, ToolCallDelta) and isinstance(later, ToolCallDelta):
        return first.index == later.index and later.id is None and later.name is None
    return first == later


class ToolCallAccumulator:
    """Gathers tool calls from their fragments, appending each fragment once (no re-parsing).

    An ``id`` or ``name`` that repeats what the call already has is not appended again:
    some servers send them on every fragment rather than on the first.
    """

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[int, tuple[list[str], list[str], list[str]]] = {}

    def add(self, delta: ToolCallDelta, fragment: str) -> None:
        ids, names, arguments = self._calls.setdefault(delta.index, ([], [], []))
        _append_new(ids, delta.id)
        _append_new(names, delta.name)
        arguments.append(fragment)

    def calls(self) -> list[ToolCall]:
        """The calls so far, by index."""
        return [
            ToolCall("".join(ids), "".join(names), "".join(arguments))
            for _, (ids, names, arguments) in sorted(self._calls.items())
        ]


def _append_new(parts: list[str], part: str | None) -> None:
    if part and part != "".join(parts):
        parts.append(part)
