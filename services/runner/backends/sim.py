"""The simulated model: deterministic text, shaped per request, timed like a real one.

The text is a pure function of the prompt and ``sim.seed``, so two runs (or two
runners) produce the same answer; tokens follow an absolute schedule
(``ttft_ms`` then ``1/tokens_per_s`` apart) so a slow consumer never slows the model.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncIterator, Iterator

from libs.common.api import SimParams
from libs.common.wire import Submit
from services.runner.backends import Outcome

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "it",
    "an",
    "be",
    "this",
    "which",
    "or",
    "are",
    "stream",
    "token",
    "model",
    "river",
    "flow",
    "sluice",
    "gate",
    "water",
    "channel",
    "current",
    "bank",
    "delta",
    "tide",
    "signal",
    "latency",
    "buffer",
    "frame",
    "reader",
    "writer",
    "resume",
    "cancel",
    "queue",
    "runner",
    "light",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "hello",
    "world",
    "answer",
    "question",
    "system",
    "design",
    "scale",
]
PUNCTUATION = (".", ",", "", "", "", "", "")


def sim_tokens(prompt: str, seed: int) -> Iterator[str]:
    """The endless deterministic token sequence for ``prompt`` and ``seed``."""
    digest = hashlib.blake2b(f"{seed}\x00{prompt}".encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    while True:
        yield " " + rng.choice(WORDS) + rng.choice(PUNCTUATION)


class SimBackend:
    async def stream(self, submit: Submit, outcome: Outcome) -> AsyncIterator[str]:
        params = submit.sim or SimParams()
        count = min(params.tokens, submit.max_tokens)
        outcome.finish_reason = "length" if params.tokens > submit.max_tokens else "stop"
        interval = 1.0 / params.tokens_per_s
        start = time.monotonic() + params.ttft_ms / 1000
        tokens = sim_tokens(submit.prompt, params.seed)
        for index in range(count):
            delay = start + index * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif index % 64 == 63:
                await asyncio.sleep(0)
            yield next(tokens)
        outcome.prompt_tokens = len(submit.prompt.split())
        outcome.completion_tokens = count

    async def close(self) -> None:
        return None
