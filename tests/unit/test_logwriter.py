"""The runner's log writer: tokens numbered without gaps, each batch logged before it is published."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import pytest

from libs.common import names
from libs.common.direct_nats import DirectNATS
from libs.common.store import StreamStore
from libs.common.wire import TokenBatch, tokens_codec
from services.runner.logwriter import MAX_PENDING_TOKENS, LogWriter, TokenBuffer

TIMEOUT_S = 5.0
FLUSH_TOKENS = 8

Event = tuple[str, str, int, int]  # (append or publish, stream id, first, last)


class World:
    """The log and the bus in one ordered record; appends wait while ``open`` is clear."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.texts: dict[str, list[str]] = {}
        self.open = asyncio.Event()
        self.open.set()
        self.appending = asyncio.Event()
        self.appends_started = 0
        self.published_any = asyncio.Event()

    async def append(self, entries: list[tuple[str, TokenBatch, bytes, int]]) -> set[str]:
        self.appending.set()
        self.appends_started += 1
        await self.open.wait()
        for stream_id, batch, payload, _epoch in entries:
            assert tokens_codec.decode(payload) == batch
            self.events.append(("append", stream_id, batch.first, batch.last))
            self.texts.setdefault(stream_id, []).extend(batch.texts)
        return set()  # no stream of these tests moves

    async def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        for subject, payload in messages:
            await self.publish(subject, payload)

    async def publish(self, subject: str, payload: bytes) -> None:
        batch = tokens_codec.decode(payload)
        assert isinstance(batch, TokenBatch)
        self.events.append(("publish", names.stream_id_of(subject), batch.first, batch.last))
        self.published_any.set()

    def appended(self, stream_id: str) -> list[tuple[int, int]]:
        return [
            (f, last) for kind, s, f, last in self.events if kind == "append" and s == stream_id
        ]

    def published(self, stream_id: str) -> list[tuple[int, int]]:
        return [
            (f, last) for kind, s, f, last in self.events if kind == "publish" and s == stream_id
        ]


@pytest.fixture
async def world() -> World:
    return World()


@asynccontextmanager
async def running(world: World, flush_s: float) -> AsyncIterator[LogWriter]:
    log_writer = LogWriter(
        cast(StreamStore, world), cast(DirectNATS, world), flush_s, flush_tokens=FLUSH_TOKENS
    )
    log_writer.start()
    try:
        yield log_writer
    finally:
        await log_writer.stop()


@pytest.fixture
async def writer(world: World) -> AsyncIterator[LogWriter]:
    async with running(world, flush_s=0.002) as log_writer:
        yield log_writer


@pytest.fixture
async def slow_writer(world: World) -> AsyncIterator[LogWriter]:
    """A flush window long enough to see tokens held for it."""
    async with running(world, flush_s=0.5) as log_writer:
        yield log_writer


def not_fenced() -> None:
    pytest.fail("a stream of this test was fenced")


def assert_contiguous(batches: list[tuple[int, int]], count: int) -> None:
    assert batches[0][0] == 1 and batches[-1][1] == count, batches
    for (_, last), (first, _) in itertools.pairwise(batches):
        assert first == last + 1, batches
    assert all(last - first < FLUSH_TOKENS for first, last in batches), batches


async def first_token(world: World, writer: LogWriter, held: bool) -> TokenBuffer:
    """A stream whose first token went at once (as first tokens do): its log append
    under way and ``held``, or else published."""
    if held:
        world.open.clear()
    buffer = TokenBuffer("st_a", not_fenced)
    writer.push(buffer, " t1", 1)
    done = world.appending if held else world.published_any
    await asyncio.wait_for(done.wait(), TIMEOUT_S)
    return buffer


async def test_tokens_are_numbered_without_gaps_and_logged_before_published(
    world: World, writer: LogWriter
) -> None:
    buffers = [TokenBuffer("st_a", not_fenced), TokenBuffer("st_b", not_fenced)]
    for seq in range(1, 21):  # a burst: more than an entry holds, taken at once
        for buffer in buffers:
            writer.push(buffer, f" {buffer.stream_id}{seq}", seq)
    for seq in range(21, 51):  # then one at a time, across flush windows
        for buffer in buffers:
            writer.push(buffer, f" {buffer.stream_id}{seq}", seq)
        await asyncio.sleep(0.001)
    async with asyncio.timeout(TIMEOUT_S):
        await asyncio.gather(*(writer.drain(buffer) for buffer in buffers))

    for buffer in buffers:
        stream_id = buffer.stream_id
        assert world.texts[stream_id] == [f" {stream_id}{seq}" for seq in range(1, 51)]
        assert_contiguous(world.appended(stream_id), 50)
        assert world.published(stream_id) == world.appended(stream_id)
    for index, (kind, stream_id, first, last) in enumerate(world.events):
        if kind == "publish":
            assert ("append", stream_id, first, last) in world.events[:index], "published first"


async def test_nothing_is_published_while_its_log_append_waits(
    world: World, writer: LogWriter
) -> None:
    buffer = await first_token(world, writer, held=True)
    for seq in range(2, 6):
        writer.push(buffer, f" {seq}", seq)
    draining = asyncio.create_task(writer.drain(buffer))
    await asyncio.sleep(0.05)
    assert world.events == [], "nothing published before the log"
    assert world.appends_started == 1, "one batch of a stream in flight at a time, drain or not"
    world.open.set()
    await asyncio.wait_for(draining, TIMEOUT_S)
    assert world.published("st_a") == world.appended("st_a") == [(1, 1), (2, 5)]


async def test_a_full_buffer_has_space_again_once_its_tokens_are_taken(
    world: World, writer: LogWriter
) -> None:
    buffer = await first_token(world, writer, held=True)
    for seq in range(MAX_PENDING_TOKENS):
        assert not buffer.full, f"full after {seq} tokens"
        writer.push(buffer, " t", seq)
    assert buffer.full and not buffer.space.is_set()
    world.open.set()
    await asyncio.wait_for(buffer.space.wait(), TIMEOUT_S)
    assert not buffer.full
    await asyncio.wait_for(writer.drain(buffer), TIMEOUT_S)
    assert world.appended("st_a")[-1][1] == MAX_PENDING_TOKENS + 1


async def test_drain_flushes_tokens_waiting_for_their_window(
    world: World, slow_writer: LogWriter
) -> None:
    buffer = await first_token(world, slow_writer, held=False)
    for seq in (2, 3):
        slow_writer.push(buffer, f" t{seq}", seq)
    await asyncio.sleep(0.05)
    assert world.appended("st_a") == [(1, 1)], "held for the flush window"
    await asyncio.wait_for(slow_writer.drain(buffer), TIMEOUT_S)
    assert world.published("st_a") == world.appended("st_a") == [(1, 1), (2, 3)]
