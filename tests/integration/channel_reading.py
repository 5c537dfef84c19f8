"""Adding up a native stream's channels the way a client does: text, reasoning, tool calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from libs.client.http import Received
from tests.integration.helpers import tokens


@dataclass
class Accumulated:
    text: str = ""
    reasoning: str = ""
    calls: dict[int, dict[str, str]] = field(default_factory=dict)

    def tool_calls(self) -> list[dict[str, str]]:
        return [self.calls[index] for index in sorted(self.calls)]


def accumulate(received: list[Received]) -> Accumulated:
    """Each token event's text added to its channel; a tool call's id and name taken once."""
    answer = Accumulated()
    for token in tokens(received):
        channel = token.get("channel")
        if channel is None:
            answer.text += token["text"]
        elif channel == "reasoning":
            answer.reasoning += token["text"]
        else:
            assert channel == "tool_call", token
            ref: dict[str, Any] = token["tool_call"]
            call = answer.calls.setdefault(ref["index"], {"id": "", "name": "", "arguments": ""})
            call["id"] += ref.get("id", "")
            call["name"] += ref.get("name", "")
            call["arguments"] += token["text"]
    return answer
