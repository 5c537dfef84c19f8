"""The simulated model: deterministic text, shaped per request, timed like a real one.

The text is a pure function of the prompt and ``sim.seed``, so two runs (or two
runners) produce the same answer. It reads its prompt the way a demo needs: the
answer opens on the prompt's own words (any script, so UTF-8 round-trips end to
end), a question about code gets a fenced code block, and the prose after that keeps
mentioning the prompt's words. Tokens follow an absolute schedule
(``ttft_ms`` then ``1/tokens_per_s`` apart) so a slow consumer never slows the model.

Like a batched model server, one decode loop serves every sequence of the runner:
each tick (at most one per :data:`TICK_S`) emits every token that is due. Sequences
wait in per-tick slots (only the slots' tick numbers are kept in a heap), so a token
costs a list append and a call instead of a timer and a task switch of its own,
which was most of a runner's work at 50,000 tokens/s.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import math
import random
import time
from collections.abc import Callable, Iterator
from itertools import chain, islice

from libs.common.api import SimParams
from libs.common.wire import Submit
from services.runner.backends import Outcome, TokenSink
from services.runner.backends.sim_channels import ChanneledSink, shaped_body
from services.runner.backends.sim_code import code_block, code_language

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
SPELLINGS = [f" {word}{mark}" for word in WORDS for mark in PUNCTUATION]
TICK_S = 0.001
REASONING_SEED = 0x5EED
MAX_PER_TICK = 64  # tokens one sequence may emit per tick when it is behind


STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "is",
        "are",
        "was",
        "were",
        "be",
        "do",
        "does",
        "did",
        "i",
        "you",
        "me",
        "my",
        "we",
        "it",
        "its",
        "of",
        "to",
        "in",
        "on",
        "for",
        "with",
        "and",
        "or",
        "how",
        "what",
        "why",
        "when",
        "where",
        "which",
        "who",
        "can",
        "could",
        "would",
        "should",
        "will",
        "please",
        "tell",
        "about",
        "this",
        "that",
        "there",
        "here",
        "some",
        "any",
        "write",
        "show",
        "give",
        "make",
        "use",
        "using",
        "need",
        "want",
        "help",
    ]
)
PROMPT_WORDS = 12
PROMPT_SHARE = 0.06  # of the prose's words, after the opening, that come from the prompt


def prompt_words(prompt: str) -> list[str]:
    """The distinctive words of the last user turn, in order, punctuation trimmed, any script kept.

    A conversation reaches the sim as ``role: text`` lines; like a chat model, it answers
    the last user message.
    """
    head, marker, last = prompt.rpartition("user: ")
    if marker and (not head or head.endswith("\n")):
        prompt = last
    words: list[str] = []
    for raw in prompt.split():
        word = raw.strip(".,;:!?\"'()[]{}<>`*")
        if not word or word.lower() in STOPWORDS or (word.isascii() and len(word) < 2):
            continue
        if word not in words:
            words.append(word)
    return words[:PROMPT_WORDS]


def sim_tokens(prompt: str, seed: int) -> Iterator[str]:
    """The endless deterministic token sequence for ``prompt`` and ``seed``.

    An opening that names the prompt's words, a code block when the prompt asks
    about code, then prose drawn from :data:`SPELLINGS` and the prompt's words.
    """
    digest = hashlib.blake2b(f"{seed}\x00{prompt}".encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    words = prompt_words(prompt)
    if words:
        yield from _opening(words)
    language = code_language(words)
    if language is not None:
        yield from code_block(language, words)
    pool = SPELLINGS
    if words:
        copies = max(1, round(len(SPELLINGS) * PROMPT_SHARE / len(words)))
        pool = SPELLINGS + [f" {word}" for word in words] * copies
    while True:  # drawn 64 at a time: a fifth of two draws per token
        yield from rng.choices(pool, k=64)


def sim_reasoning(prompt: str, seed: int) -> Iterator[str]:
    """The thinking the sim streams before its answer: prose on the prompt's words, drawn
    from a seed of its own so that it does not echo the answer."""
    return sim_tokens(prompt, seed ^ REASONING_SEED)


def _opening(words: list[str]) -> list[str]:
    named = [f" {word}," for word in words[:-1]] + [f" {words[-1]}:"]
    if len(named) > 1:
        named[-2] = named[-2].rstrip(",")
        named.insert(-1, " and")
    return [" On", *named]


class Answer:
    """What the sim will say: its tokens, where each goes, how many, and why it ends."""

    __slots__ = ("count", "finish_reason", "push", "reasoning", "tokens")

    def __init__(self, submit: Submit, params: SimParams, sink: TokenSink) -> None:
        prompt, seed = submit.prompt_text, params.seed
        shaped = shaped_body(submit.tooling, prompt, seed) if submit.tooling else None
        self.tokens: Iterator[str] = sim_tokens(prompt, seed)
        self.push: Callable[[str], None] = sink.push
        body, reason, calls = params.tokens, "stop", []
        if shaped is not None:
            self.tokens = iter(shaped.fragments)
            body, reason, calls = len(shaped.fragments), shaped.finish_reason, shaped.calls
        self.reasoning = min(params.reasoning_tokens, submit.max_tokens)
        if self.reasoning or calls:
            thinking = islice(sim_reasoning(prompt, seed), self.reasoning)
            self.tokens = chain(thinking, self.tokens)
            self.push = ChanneledSink(sink, self.reasoning, calls).push
        total = params.reasoning_tokens + body
        self.count = min(total, submit.max_tokens)
        self.finish_reason = "length" if total > submit.max_tokens else reason


class _Sequence:
    """One generation in the decode loop: its schedule, its text and its sink."""

    __slots__ = ("count", "done", "index", "interval", "push", "sink", "start", "tokens")

    def __init__(
        self,
        sink: TokenSink,
        push: Callable[[str], None],
        tokens: Iterator[str],
        start: float,
        interval: float,
        count: int,
        done: asyncio.Future[None],
    ) -> None:
        self.sink, self.push, self.tokens, self.done = sink, push, tokens, done
        self.start, self.interval, self.count = start, interval, count
        self.index = 0


class SimBackend:
    def __init__(self) -> None:
        self._slots: dict[int, list[_Sequence]] = {}  # tick number -> sequences due by then
        self._ticks: list[int] = []  # the slots' tick numbers, a heap
        self._timer: asyncio.TimerHandle | None = None
        self._wake_tick = 0
        self._parked: set[asyncio.Task[None]] = set()

    async def generate(self, submit: Submit, outcome: Outcome, sink: TokenSink) -> None:
        params = submit.sim or SimParams()
        answer = Answer(submit, params, sink)
        outcome.finish_reason = answer.finish_reason
        done = asyncio.get_running_loop().create_future()
        sequence = _Sequence(
            sink,
            answer.push,
            answer.tokens,
            start=time.monotonic() + params.ttft_ms / 1000,
            interval=1.0 / params.tokens_per_s,
            count=answer.count,
            done=done,
        )
        if answer.count:
            self._schedule(sequence)
            await done  # a cancel cancels ``done`` too, so the loop drops the sequence
        outcome.prompt_tokens = len(submit.prompt_text.split())
        outcome.completion_tokens = answer.count
        outcome.reasoning_tokens = answer.reasoning or None

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in self._parked:
            task.cancel()

    def _schedule(self, sequence: _Sequence) -> None:
        tick = self._place(sequence)
        if self._timer is None or tick < self._wake_tick:
            self._arm(time.monotonic())

    def _place(self, sequence: _Sequence) -> int:
        """Put the sequence in the slot of the first tick at or after its next token."""
        tick = math.ceil((sequence.start + sequence.index * sequence.interval) / TICK_S)
        slot = self._slots.get(tick)
        if slot is None:
            self._slots[tick] = [sequence]
            heapq.heappush(self._ticks, tick)
        else:
            slot.append(sequence)
        return tick

    def _arm(self, now: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._ticks:
            self._wake_tick = self._ticks[0]
            delay = max(self._wake_tick * TICK_S - now, TICK_S)
            self._timer = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        now = time.monotonic()
        current = math.floor(now / TICK_S)
        ready: list[_Sequence] = []
        while self._ticks and self._ticks[0] <= current:
            ready += self._slots.pop(heapq.heappop(self._ticks))
        for sequence in ready:  # one still behind goes back in line for the next tick
            self._advance(sequence, now)
        self._arm(now)

    def _advance(self, sequence: _Sequence, now: float) -> None:
        """Emit the sequence's due tokens, then put it back in line, park it or finish it."""
        if sequence.done.done():
            return
        sink, push, tokens, index = sequence.sink, sequence.push, sequence.tokens, sequence.index
        due = min(
            sequence.count,
            index + MAX_PER_TICK,
            int((now - sequence.start) / sequence.interval) + 1,
        )
        while index < due:
            if sink.full():
                sequence.index = index
                parked = asyncio.get_running_loop().create_task(self._unpark(sequence))
                self._parked.add(parked)
                parked.add_done_callback(self._parked.discard)
                return
            push(next(tokens))
            index += 1
        sequence.index = index
        if index == sequence.count:
            sequence.done.set_result(None)
        else:
            self._place(sequence)

    async def _unpark(self, sequence: _Sequence) -> None:
        """A full sink (its log unwritable) pauses the sequence until it has room."""
        done = sequence.done
        space = asyncio.ensure_future(sequence.sink.space())
        await asyncio.wait([space, done], return_when=asyncio.FIRST_COMPLETED)
        space.cancel()
        if not done.done():
            self._schedule(sequence)
