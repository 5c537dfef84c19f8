"""The simulated model's decode loop: right text, on schedule, stoppable, and paused by a full sink."""

from __future__ import annotations

import asyncio
import gc
import itertools
import statistics
import time
from collections.abc import AsyncGenerator, AsyncIterator

import msgspec
import pytest

from libs.common.api import Message, SimParams
from libs.common.channels import Channel, ToolCallDelta
from libs.common.tooling import FunctionDef, Tool, ToolParams
from libs.common.wire import Submit
from services.runner.backends import Outcome, Piece, Resume, pump
from services.runner.backends.sim import MAX_PER_TICK, TICK_S, SimBackend, sim_tokens


class RecordingSink:
    """A sink that records each token with its push time, full while at ``capacity``.

    ``batches`` counts the pushes made in each turn of the event loop, which for the
    sim backend is the pushes of one decode tick.
    """

    def __init__(self, capacity: int | None = None) -> None:
        self.pushes: list[tuple[str, float]] = []
        self.batches: list[int] = []
        self.overfilled = 0  # pushes made while full: a backend must never do that
        self.capacity = capacity
        self._room = asyncio.Event()
        self._batch_open = False
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    @property
    def texts(self) -> list[str]:
        return [text for text, _ in self.pushes]

    def push(self, text: str) -> None:
        if self.full():
            self.overfilled += 1
        self.pushes.append((text, time.monotonic()))
        if not self._batch_open:
            self._batch_open = True
            self.batches.append(0)
            asyncio.get_running_loop().call_soon(self._close_batch)
        self.batches[-1] += 1
        for count, waiter in self._waiters:
            if len(self.pushes) >= count and not waiter.done():
                waiter.set_result(None)

    def push_channel(self, text: str, channel: Channel) -> None:
        self.push(text)

    def full(self) -> bool:
        return self.capacity is not None and len(self.pushes) >= self.capacity

    async def space(self) -> None:
        while self.full():
            self._room.clear()
            await self._room.wait()

    def give_space(self, capacity: int | None = None) -> None:
        """Raise the capacity (``None``: unbounded) and wake whoever waits for space."""
        self.capacity = capacity
        self._room.set()

    async def wait_for(self, count: int) -> None:
        """Return once ``count`` tokens have been pushed (or fail after five seconds)."""
        if len(self.pushes) >= count:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((count, waiter))
        async with asyncio.timeout(5):
            await waiter

    def _close_batch(self) -> None:
        self._batch_open = False


def make_submit(
    prompt: str = "where does the river go",
    *,
    ttft_ms: int = 0,
    tokens_per_s: float = 1000.0,
    tokens: int = 20,
    seed: int = 0,
    max_tokens: int = 100_000,
) -> Submit:
    return Submit(
        id="s-test",
        tenant="acme",
        model="sim",
        messages=[Message(role="user", content=prompt)],
        prompt=prompt,
        max_tokens=max_tokens,
        created_ns=time.time_ns(),
        sim=SimParams(ttft_ms=ttft_ms, tokens_per_s=tokens_per_s, tokens=tokens, seed=seed),
    )


def expected(prompt: str, seed: int, count: int) -> list[str]:
    return list(itertools.islice(sim_tokens(prompt, seed), count))


@pytest.fixture
async def backend() -> AsyncIterator[SimBackend]:
    sim = SimBackend()
    yield sim
    await sim.close()


def test_sim_tokens_are_a_function_of_prompt_and_seed() -> None:
    """Two runners must produce the same answer; another seed or prompt another one."""
    first = expected("a prompt", 7, 200)
    assert first == expected("a prompt", 7, 200)
    assert first != expected("a prompt", 8, 200)
    assert first != expected("another prompt", 7, 200)
    assert all(token.startswith(" ") and len(token) > 1 for token in first)


@pytest.mark.parametrize("logged", [0, 1, 37, 60])
async def test_a_continuation_pushes_exactly_what_follows_the_logged_tokens(
    backend: SimBackend, logged: int
) -> None:
    """Regenerated and skipped, with no time to first token: the rest of the same answer."""
    submit = make_submit(tokens=60, tokens_per_s=10_000, ttft_ms=60_000, seed=5)
    sink, outcome = RecordingSink(), Outcome()
    async with asyncio.timeout(5):
        await backend.generate(submit, outcome, sink, Resume(logged))
    assert sink.texts == expected(submit.prompt_text, 5, 60)[logged:]
    assert outcome.completion_tokens == 60 and outcome.finish_reason == "stop"


class ChannelSink(RecordingSink):
    """Records each token with its channel (None: answer text)."""

    def __init__(self) -> None:
        super().__init__()
        self.channels: list[Channel | None] = []

    def push(self, text: str) -> None:
        self.channels.append(None)
        super().push(text)

    def push_channel(self, text: str, channel: Channel) -> None:
        super().push(text)
        self.channels.append(channel)


@pytest.mark.parametrize("logged", [0, 5, 9, 14])
async def test_a_continuation_of_reasoning_and_a_tool_call_keeps_each_token_on_its_channel(
    backend: SimBackend, logged: int
) -> None:
    """Skipping the logged tokens moves the channel positions too: the rest of the
    reasoning stays reasoning and the rest of the call's arguments stay the call's."""
    weather = FunctionDef(name="weather", parameters={"type": "object", "properties": {}})
    submit = msgspec.structs.replace(
        make_submit(tokens=60, tokens_per_s=10_000, seed=5),
        sim=SimParams(tokens_per_s=10_000, tokens=60, seed=5, reasoning_tokens=10),
        tooling=ToolParams(tools=[Tool(function=weather)]),
    )
    whole, whole_outcome = ChannelSink(), Outcome()
    rest, rest_outcome = ChannelSink(), Outcome()
    async with asyncio.timeout(5):
        await backend.generate(submit, whole_outcome, whole)
        await backend.generate(submit, rest_outcome, rest, Resume(logged))
    assert whole.channels[0] == "reasoning" and isinstance(whole.channels[-1], ToolCallDelta)
    assert rest.texts == whole.texts[logged:]
    assert rest.channels == whole.channels[logged:]
    assert rest_outcome == whole_outcome


@pytest.mark.parametrize(
    ("tokens", "max_tokens", "finish_reason"),
    [(5, 10, "stop"), (7, 7, "stop"), (10, 4, "length"), (0, 5, "stop")],
)
async def test_text_and_outcome(
    backend: SimBackend, tokens: int, max_tokens: int, finish_reason: str
) -> None:
    """The answer is the first min(tokens, max_tokens) sim tokens; a cut one ends "length"."""
    submit = make_submit(tokens=tokens, max_tokens=max_tokens, tokens_per_s=10_000, seed=3)
    sink, outcome = RecordingSink(), Outcome()
    async with asyncio.timeout(5):
        await backend.generate(submit, outcome, sink)
    count = min(tokens, max_tokens)
    assert sink.texts == expected(submit.prompt_text, 3, count)
    assert outcome.finish_reason == finish_reason
    assert outcome.completion_tokens == count
    assert outcome.prompt_tokens == len(submit.prompt_text.split())


def test_many_concurrent_sequences_keep_their_schedule() -> None:
    """One loop serves them all, each token at ttft + i/rate: never early, never far late.

    On an event loop of its own, with the test session's heap frozen: the session's
    loop carries other tests' leftovers, and a full collection of the heap that 700
    tests leave behind takes ~150 ms; either would be counted as the sim's lateness.
    """
    streams, tokens, rate, ttft_ms = 200, 20, 200.0, 20
    sinks = [RecordingSink() for _ in range(streams)]
    outcomes = [Outcome() for _ in range(streams)]
    started = [0.0] * streams

    async def run(backend: SimBackend, k: int) -> None:
        submit = make_submit(
            f"prompt {k}", ttft_ms=ttft_ms, tokens_per_s=rate, tokens=tokens, seed=k
        )
        started[k] = time.monotonic()  # the backend's clock starts just after this
        await backend.generate(submit, outcomes[k], sinks[k])

    async def run_all() -> None:
        backend = SimBackend()
        try:
            async with asyncio.timeout(10):
                await asyncio.gather(*(run(backend, k) for k in range(streams)))
        finally:
            await backend.close()

    gc.collect()
    gc.freeze()
    try:
        asyncio.run(run_all())
    finally:
        gc.unfreeze()

    lateness: list[float] = []
    for k, sink in enumerate(sinks):
        assert sink.texts == expected(f"prompt {k}", k, tokens)
        assert outcomes[k].completion_tokens == tokens
        for i, (_, at) in enumerate(sink.pushes):
            due = started[k] + ttft_ms / 1000 + i / rate
            assert at >= due - 1e-6, f"stream {k} token {i} came {due - at:.6f}s early"
            lateness.append(at - due)
    # Generous margins (a loaded CI core stalls a loop now and then); a slow tick shows
    # as every token late, which the median catches.
    assert max(lateness) < 0.5, f"worst lateness {max(lateness):.4f}s"
    assert statistics.median(lateness) < 0.020, "tokens wait for a slow tick"


async def test_cancel_stops_pushes_at_once(backend: SimBackend) -> None:
    """Cancelling the awaiting task releases the model: not one more token, others go on."""
    rate = 500.0
    cancelled, other = RecordingSink(), RecordingSink()
    task = asyncio.create_task(
        backend.generate(make_submit(tokens=10_000, tokens_per_s=rate), Outcome(), cancelled)
    )
    survivor = asyncio.create_task(
        backend.generate(make_submit(tokens=30, tokens_per_s=rate, seed=1), Outcome(), other)
    )
    await cancelled.wait_for(3)
    task.cancel()
    pushed = len(cancelled.pushes)
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(5 / rate)  # five token intervals
    assert len(cancelled.pushes) == pushed
    async with asyncio.timeout(5):
        await survivor
    assert other.texts == expected("where does the river go", 1, 30)
    assert len(cancelled.pushes) == pushed


async def test_full_sink_pauses_the_sequence_until_it_has_space(backend: SimBackend) -> None:
    """No token goes into a full sink; once it has room the rest follows, in order."""
    rate, tokens = 1000.0, 100
    sink = RecordingSink(capacity=10)
    task = asyncio.create_task(
        backend.generate(make_submit(tokens=tokens, tokens_per_s=rate), Outcome(), sink)
    )
    await sink.wait_for(10)
    await asyncio.sleep(20 / rate)  # twenty token intervals with no room
    assert len(sink.pushes) == 10 and not task.done()

    sink.give_space(capacity=40)  # room for some, then full again
    await sink.wait_for(40)
    await asyncio.sleep(20 / rate)
    assert len(sink.pushes) == 40 and not task.done()

    sink.give_space()
    async with asyncio.timeout(5):
        await task
    assert sink.texts == expected("where does the river go", 0, tokens)
    assert sink.overfilled == 0


async def test_cancel_while_paused_by_a_full_sink(backend: SimBackend) -> None:
    """A sequence cancelled while parked stays stopped when its sink later has room."""
    rate = 1000.0
    sink = RecordingSink(capacity=5)
    task = asyncio.create_task(
        backend.generate(make_submit(tokens=100, tokens_per_s=rate), Outcome(), sink)
    )
    await sink.wait_for(5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    sink.give_space()
    await asyncio.sleep(10 / rate)
    assert len(sink.pushes) == 5


@pytest.mark.parametrize(("rate", "tokens"), [(20_000.0, 2000), (1_000_000.0, 5000)])
async def test_fast_sequences_catch_up_in_bounded_steps(
    backend: SimBackend, rate: float, tokens: int
) -> None:
    """Faster than the tick, a sequence emits at most MAX_PER_TICK a tick and loses nothing."""
    sink = RecordingSink()
    async with asyncio.timeout(10):
        await backend.generate(make_submit(tokens=tokens, tokens_per_s=rate), Outcome(), sink)
    assert sink.texts == expected("where does the river go", 0, tokens)
    assert max(sink.batches) <= MAX_PER_TICK
    if rate * TICK_S > MAX_PER_TICK:  # always behind: only the per-tick cap paces it
        assert max(sink.batches) == MAX_PER_TICK
        assert len(sink.batches) >= -(-tokens // MAX_PER_TICK)


async def counting_pieces(log: list[str]) -> AsyncGenerator[Piece]:
    """An endless model that logs each piece (answer text) it hands out and its closing."""
    try:
        for i in itertools.count():
            log.append(f"piece {i}")
            yield f"p{i}", None
    finally:
        log.append("closed")


async def test_pump_stops_pulling_while_the_sink_is_full() -> None:
    """The model is not asked for more while the sink is full, and resumes with room."""
    log: list[str] = []
    sink = RecordingSink(capacity=2)
    task = asyncio.create_task(pump(counting_pieces(log), sink))
    await sink.wait_for(2)
    for _ in range(5):
        await asyncio.sleep(0)
    assert log == ["piece 0", "piece 1"]
    sink.give_space(capacity=4)
    await sink.wait_for(4)
    for _ in range(5):
        await asyncio.sleep(0)
    assert sink.texts == ["p0", "p1", "p2", "p3"] and sink.overfilled == 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_pump_closes_the_model_when_cancelled_while_waiting_for_space() -> None:
    """A cancel while paused must close the generator (its upstream) at once."""
    log: list[str] = []
    sink = RecordingSink(capacity=1)
    task = asyncio.create_task(pump(counting_pieces(log), sink))
    await sink.wait_for(1)
    await asyncio.sleep(0)
    assert "closed" not in log
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["piece 0", "closed"]
