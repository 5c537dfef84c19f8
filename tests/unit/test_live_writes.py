"""A reader's live path: fresh tokens leave one frame each, stale ones gather for a window."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from libs.common.sse import SSEParser
from libs.common.store import StreamStore
from libs.common.wire import StatusChange, TokenBatch, TokensMessage
from services.streamer.direct import FRESH_NS, STALE_FLUSH_S, LiveWrites
from services.streamer.reader import Reader, ReaderLimits


class Transport:
    """Just what a reader asks of its socket; every write is kept."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str) -> None:
        return None


class Response:
    async def write(self, data: bytes) -> None:
        pass


class EmptyLog:
    read_chunk = 512

    async def read(self, stream_id: str, after_seq: int) -> list[TokensMessage]:
        return []


async def parked_reader() -> tuple[Reader, Transport, asyncio.Task[str]]:
    transport = Transport()
    reader = Reader(
        "st_test",
        Response(),
        cast(Any, transport),
        cast(StreamStore, EmptyLog()),
        0,
        ReaderLimits(buffer_bytes=1 << 20, heartbeat_s=60, stall_timeout_s=60),
    )
    reader.live_writes = LiveWrites()
    serving = asyncio.create_task(reader.serve(StatusChange(status="running")))
    for _ in range(5):  # open, catch up from the (empty) log, park
        await asyncio.sleep(0)
    return reader, transport, serving


def tokens_in(writes: list[bytes]) -> list[list[str]]:
    """The texts of each token frame written (the stand-in response is not chunked)."""
    events = SSEParser().feed(b"".join(writes))
    return [[cast(dict[str, Any], e.json())["text"]] for e in events if e.type == "token"]


async def test_fresh_tokens_are_written_at_once_one_frame_each() -> None:
    reader, transport, serving = await parked_reader()
    for seq in (1, 2, 3):
        reader.offer(TokenBatch(first=seq, texts=[f" t{seq}"], ts=time.time_ns()))
        assert len(transport.writes) == seq, "written inside offer, before any await"
    assert tokens_in(transport.writes) == [[" t1"], [" t2"], [" t3"]]
    serving.cancel()


async def test_stale_tokens_offered_within_the_window_leave_as_one_frame() -> None:
    reader, transport, serving = await parked_reader()
    stale = time.time_ns() - 4 * FRESH_NS
    for seq in (1, 2):
        reader.offer(TokenBatch(first=seq, texts=[f" t{seq}"], ts=stale))
    await asyncio.sleep(STALE_FLUSH_S / 4)
    assert transport.writes == [], "a streamer that is behind gathers before writing"
    reader.offer(TokenBatch(first=3, texts=[" t3"], ts=stale))
    await asyncio.sleep(STALE_FLUSH_S)
    assert tokens_in(transport.writes) == [[" t1 t2 t3"]]
    assert reader.sent == 3
    reader.offer(TokenBatch(first=4, texts=[" t4"], ts=time.time_ns()))
    assert tokens_in(transport.writes)[-1] == [" t4"], "fresh again: written at once"
    serving.cancel()


async def test_a_fresh_batch_that_does_not_follow_the_last_token_is_not_written_at_once() -> None:
    for first, texts in ((1, [" t1", " t2"]), (3, [" t3"])):  # an overlap, a gap
        reader, transport, serving = await parked_reader()
        reader.offer(TokenBatch(first=1, texts=[" t1"], ts=time.time_ns()))
        reader.offer(TokenBatch(first=first, texts=texts, ts=time.time_ns()))
        assert tokens_in(transport.writes) == [[" t1"]], f"{texts} waits for the writer task"
        assert reader.sent == 1
        serving.cancel()
