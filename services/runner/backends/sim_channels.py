"""The simulated model's channels and shapes: reasoning first, then a tool call or JSON.

With ``sim.reasoning_tokens`` the answer opens with that many thinking tokens; when
the request has ``tools`` (and ``tool_choice`` is not ``none``) the answer is one call
of the chosen function (the named one, else the first), whose arguments are valid
JSON for its schema, streamed a few characters per token; a ``json_schema`` or
``json_object`` ``response_format`` makes the answer text such JSON. Everything is a
pure function of the prompt and ``sim.seed``, like the sim's text.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any

from libs.common.channels import REASONING, Channel, ToolCallDelta
from libs.common.tooling import JsonObjectFormat, JsonSchemaFormat, ToolParams
from services.runner.backends import TokenSink

FRAGMENT_CHARS = (3, 9)  # argument characters per token, drawn in this range
MAX_DEPTH = 6
WORDS = ("alpha", "bravo", "delta", "river", "sluice", "tide", "signal", "harbor")


def seeded(prompt: str, seed: int, purpose: str) -> random.Random:
    digest = hashlib.blake2b(f"{purpose}\x00{seed}\x00{prompt}".encode(), digest_size=8)
    return random.Random(int.from_bytes(digest.digest(), "big"))


@dataclass(frozen=True, slots=True)
class ShapedBody:
    """The answer's body when the request shapes it: JSON fragments, and their tool call."""

    fragments: list[str]
    calls: list[ToolCallDelta]
    finish_reason: str


def shaped_body(tooling: ToolParams, prompt: str, seed: int) -> ShapedBody | None:
    """A call of the tool to call, else JSON for the response format, else None (text)."""
    function = tooling.calls_tool()
    if function is not None:
        fragments = json_pieces(function.parameters, prompt, seed)
        first = ToolCallDelta(0, call_id(prompt, seed), function.name)
        calls = [first] + [ToolCallDelta(0)] * (len(fragments) - 1)
        return ShapedBody(fragments, calls, "tool_calls")
    schema = output_schema(tooling)
    if schema is None:
        return None
    return ShapedBody(json_pieces(schema, prompt, seed), [], "stop")


def output_schema(tooling: ToolParams) -> dict[str, Any] | None:
    """The schema the answer text must follow, if the request asks for JSON."""
    form = tooling.response_format
    if isinstance(form, JsonSchemaFormat):
        return form.json_schema.schema or {"type": "object"}
    return {"type": "object"} if isinstance(form, JsonObjectFormat) else None


def json_pieces(schema: dict[str, Any] | None, prompt: str, seed: int) -> list[str]:
    """A JSON value valid for ``schema`` (an empty object's without one), cut into fragments."""
    rng = seeded(prompt, seed, "json")
    schema = schema or {"type": "object", "properties": {}}
    arguments = json.dumps(_value(schema, schema, rng, 0), separators=(",", ":"))
    fragments: list[str] = []
    start = 0
    while start < len(arguments):
        end = start + rng.randint(*FRAGMENT_CHARS)
        fragments.append(arguments[start:end])
        start = end
    return fragments or [""]


def call_id(prompt: str, seed: int) -> str:
    return "call_" + hashlib.blake2b(f"{seed}\x00{prompt}".encode(), digest_size=12).hexdigest()


def _value(schema: dict[str, Any], root: dict[str, Any], rng: random.Random, depth: int) -> Any:
    """A value valid for ``schema`` (the subset models are given: types, enums, refs)."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return _value(target, root, rng, depth + 1) if depth < MAX_DEPTH else None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _value(schema[key][0], root, rng, depth + 1)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    return _typed(kind, schema, root, rng, depth)


def _typed(
    kind: str, schema: dict[str, Any], root: dict[str, Any], rng: random.Random, depth: int
) -> Any:
    if kind == "object":
        properties = schema.get("properties", {}) if depth < MAX_DEPTH else {}
        return {name: _value(sub, root, rng, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        items = schema.get("items", {}) if depth < MAX_DEPTH else {}
        count = max(int(schema.get("minItems", 1)), 1 if items else 0)
        return [_value(items, root, rng, depth + 1) for _ in range(count)]
    if kind == "integer":
        return rng.randint(int(schema.get("minimum", 0)), int(schema.get("maximum", 100)))
    if kind == "number":
        low, high = float(schema.get("minimum", 0)), float(schema.get("maximum", 100))
        return round(rng.uniform(low, high), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "string":
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
    return None


class ChanneledSink:
    """Plays an answer's tokens into a sink, each on its channel by position.

    The decode loop pushes plain texts; this adds the channel: the first
    ``reasoning`` tokens are thinking, the ``calls`` tokens after them a tool call's
    arguments, the rest answer text.
    """

    __slots__ = ("_calls", "_index", "_reasoning", "_sink")

    def __init__(self, sink: TokenSink, reasoning: int, calls: list[ToolCallDelta]) -> None:
        self._sink, self._reasoning, self._calls = sink, reasoning, calls
        self._index = 0

    def push(self, text: str) -> None:
        index = self._index - self._reasoning
        self._index += 1
        channel: Channel | None = REASONING if index < 0 else None
        if 0 <= index < len(self._calls):
            channel = self._calls[index]
        if channel is None:
            self._sink.push(text)
        else:
            self._sink.push_channel(text, channel)
