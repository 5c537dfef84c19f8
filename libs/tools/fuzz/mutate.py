"""Random and mutated inputs: valid requests bent out of shape, and plain garbage."""

from __future__ import annotations

import random
from typing import Any

import msgspec

JsonValue = Any

STRANGE_STRINGS = [
    "",
    " ",
    "a b",
    "a.>",
    ">",
    "*",
    "st_x\r\nPUB x 1",
    "²",
    "\x00",
    "é" * 3,
    "💥",
    "../../etc",
    "%00",
    "\ufeff",
    "Bearer ",
    "null",
    "st_" + "0" * 32,
    "9" * 25,
    "-1",
    "1e3",
    "<script>",
]
STRANGE_NUMBERS = [0, -1, 1, 2**63, 2**64 + 1, -(2**63) - 1, 10**30, 0.5, -0.0, 1e308, 3]


def value(rng: random.Random, depth: int = 0) -> JsonValue:
    """Any JSON value, leaning on the edges: huge and negative numbers, odd strings."""
    roll = rng.random()
    if roll < 0.25:
        return rng.choice(STRANGE_NUMBERS)
    if roll < 0.5:
        return rng.choice(STRANGE_STRINGS)
    if roll < 0.6:
        return "x" * rng.choice([1, 300, 70_000])
    if roll < 0.7 or depth > 3:
        return rng.choice([None, True, False, [], {}])
    if roll < 0.85:
        return [value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(STRANGE_STRINGS): value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def mutate_object(rng: random.Random, base: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """``base`` with one to three fields set to odd values, dropped or added."""
    body = dict(base)
    for _ in range(rng.randint(1, 3)):
        roll = rng.random()
        if roll < 0.6:
            body[rng.choice(fields)] = value(rng)
        elif roll < 0.8 and body:
            body.pop(rng.choice(list(body)))
        else:
            body[rng.choice(STRANGE_STRINGS) or "surprise"] = value(rng)
    return body


def mutate_bytes(rng: random.Random, encoded: bytes) -> bytes:
    """The encoded body broken at the byte level: cut, flipped, padded or replaced."""
    roll = rng.random()
    if roll < 0.2:
        return encoded[: rng.randint(0, len(encoded))]
    if roll < 0.4 and encoded:
        data = bytearray(encoded)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if roll < 0.5:
        return b'{"prompt": "\xff\xfe\xc3"}'
    if roll < 0.6:
        return b'{"prompt": "x", "metadata": ' + nested(rng.choice([9, 5000])) + b"}"
    if roll < 0.7:
        return rng.randbytes(rng.randint(0, 200))
    return encoded


def body(rng: random.Random, base: dict[str, Any], fields: list[str]) -> bytes:
    """A request body: usually a mutated object, sometimes broken bytes."""
    encoded = msgspec.json.encode(mutate_object(rng, base, fields))
    return mutate_bytes(rng, encoded) if rng.random() < 0.3 else encoded


def stream_id(rng: random.Random, known: list[str]) -> str:
    if known and rng.random() < 0.5:
        return rng.choice(known)
    return rng.choice(STRANGE_STRINGS) or "st_nope"


def header_value(rng: random.Random, valid: str) -> str | None:
    """A header as a client might send it, or mangled, or missing."""
    roll = rng.random()
    if roll < 0.6:
        return valid
    if roll < 0.75:
        return None
    return rng.choice([*STRANGE_STRINGS, "Bearer " + "k" * 5000, "Basic Zm9v"])
