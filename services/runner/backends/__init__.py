"""Model backends: each turns a :class:`~libs.common.wire.Submit` into a stream of text pieces.

A backend is cancelled by cancelling the task that iterates it; it must release
the model at once when that happens (close the upstream connection).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from libs.common.wire import Submit


@dataclass(slots=True)
class Outcome:
    """What a backend reports besides its tokens, filled in as it goes."""

    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class Backend(Protocol):
    def stream(self, submit: Submit, outcome: Outcome) -> AsyncIterator[str]:
        """Yield the answer's tokens in order; set ``outcome`` before returning."""
        ...

    async def close(self) -> None: ...
