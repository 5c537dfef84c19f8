"""A reader's numbering where the log and live traffic meet: never a repeat, never a gap.

Log entries hold several tokens each (group commit), so a resume or a catch-up may end
inside one; and a live batch published before the catch-up read may arrive after it.
These cases are forced here, not left to timing.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from libs.common.sse import SSEParser
from libs.common.store import StreamStore
from libs.common.wire import Done, StatusChange, TokenBatch, TokensMessage
from services.streamer.reader import Reader, ReaderLimits

TIMEOUT_S = 5.0


class Log:
    """A stream's log of five-token entries; ``read`` waits while ``open`` is clear."""

    read_chunk = 512

    def __init__(self, tokens: int, done: bool = False) -> None:
        self.entries: list[TokensMessage] = []
        self.add(1, tokens)
        if done:
            self.entries.append(Done(finish_reason="stop", tokens=tokens))
        self.open = asyncio.Event()
        self.open.set()
        self.reads = 0

    def add(self, first: int, last: int) -> None:
        """Log tokens ``first`` to ``last``, five to an entry."""
        for start in range(first, last + 1, 5):
            texts = [f" t{seq}" for seq in range(start, start + 5)]
            self.entries.append(TokenBatch(first=start, texts=texts, ts=1))

    async def read(self, stream_id: str, after_seq: int) -> list[TokensMessage]:
        await self.open.wait()
        self.reads += 1
        return [
            entry
            for entry in self.entries
            if not isinstance(entry, TokenBatch) or entry.last > after_seq
        ]


class Client:
    """The response: every byte written, parsed as a client would."""

    def __init__(self) -> None:
        self.data = b""
        self.wrote = asyncio.Event()

    async def write(self, data: bytes) -> None:
        self.data += data
        self.wrote.set()

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        return [(e.type, cast(dict[str, Any], e.json())) for e in SSEParser().feed(self.data)]

    def tokens(self) -> list[tuple[int, str]]:
        """(first id, text) of each token frame."""
        frames = [event for kind, event in self.events() if kind == "token"]
        return [(f["seq"] - f["n"] + 1, f["text"]) for f in frames]

    def text(self) -> str:
        return "".join(text for _, text in self.tokens())


def texts(first: int, last: int) -> str:
    return "".join(f" t{seq}" for seq in range(first, last + 1))


def reader(log: Log, client: Client, after_seq: int) -> Reader:
    limits = ReaderLimits(buffer_bytes=1 << 20, heartbeat_s=60, stall_timeout_s=60)
    return Reader("st_test", client, None, cast(StreamStore, log), after_seq, limits)


async def settle(reader: Reader, client: Client, upto: int) -> None:
    """Wait for the writes that send token ``upto``."""
    async with asyncio.timeout(TIMEOUT_S):
        while reader.sent < upto:
            client.wrote.clear()
            await client.wrote.wait()


async def test_a_resume_inside_a_log_entry_starts_at_the_next_token() -> None:
    client = Client()
    reason = await asyncio.wait_for(
        reader(Log(20, done=True), client, 7).serve(StatusChange(status="completed")), TIMEOUT_S
    )
    assert reason == "done"
    assert client.tokens()[0][0] == 8
    assert client.text() == texts(8, 20)


async def test_a_resume_at_an_entry_boundary_starts_at_the_next_entry() -> None:
    client = Client()
    await asyncio.wait_for(
        reader(Log(20, done=True), client, 10).serve(StatusChange(status="completed")), TIMEOUT_S
    )
    assert client.tokens()[0][0] == 11 and client.text() == texts(11, 20)


async def test_a_live_batch_overlapping_the_catch_up_sends_only_its_new_tokens() -> None:
    client, log = Client(), Log(10)
    log.open.clear()
    follower = reader(log, client, 3)
    serving = asyncio.create_task(follower.serve(StatusChange(status="running")))
    await asyncio.sleep(0)
    follower.offer(TokenBatch(first=9, texts=[" t9", " t10"], ts=1))  # dropped: behind
    log.open.set()
    await settle(follower, client, 10)
    follower.offer(TokenBatch(first=9, texts=[" t9", " t10", " t11", " t12"], ts=1))
    await settle(follower, client, 12)
    follower.offer(TokenBatch(first=6, texts=[" t6", " t7", " t8"], ts=1))
    follower.offer(TokenBatch(first=13, texts=[" t13"], ts=1))
    await settle(follower, client, 13)
    follower.offer(Done(finish_reason="stop", tokens=13))

    assert await asyncio.wait_for(serving, TIMEOUT_S) == "done"
    assert client.text() == texts(4, 13), "each token once, in order"
    ids = [first for first, _ in client.tokens()]
    assert ids == sorted(ids) and ids[0] == 4
    assert log.reads == 1, "the overlap is trimmed live, not by reading the log again"


async def test_a_live_batch_after_a_gap_sends_the_reader_to_the_log_for_the_missing_tokens() -> (
    None
):
    client, log = Client(), Log(10)
    follower = reader(log, client, 0)
    serving = asyncio.create_task(follower.serve(StatusChange(status="running")))
    await settle(follower, client, 10)
    log.add(11, 20)  # 11 was lost on the way (NATS reconnected)
    follower.offer(TokenBatch(first=12, texts=[f" t{seq}" for seq in range(12, 21)], ts=1))
    await settle(follower, client, 20)
    follower.offer(Done(finish_reason="stop", tokens=20))

    assert await asyncio.wait_for(serving, TIMEOUT_S) == "done"
    assert client.text() == texts(1, 20)
    assert log.reads == 2


@pytest.mark.parametrize("lost", [1, 5])
async def test_a_gap_in_the_log_answers_expired_and_skips_nothing(lost: int) -> None:
    client, log = Client(), Log(15, done=True)
    gone = log.entries.pop(1)  # tokens 6 to 10, or 6 alone
    assert isinstance(gone, TokenBatch)
    if lost < len(gone.texts):
        log.entries.insert(1, TokenBatch(first=6 + lost, texts=gone.texts[lost:], ts=1))
    await asyncio.wait_for(reader(log, client, 0).serve(StatusChange(status="running")), TIMEOUT_S)
    kind, end = client.events()[-1]
    assert kind == "error" and end["type"] == "expired"
    assert all(first <= 5 for first, _ in client.tokens()), "nothing past the gap"


async def test_an_end_that_overtakes_its_tokens_waits_for_them_from_the_log() -> None:
    client, log = Client(), Log(10)
    follower = reader(log, client, 0)
    serving = asyncio.create_task(follower.serve(StatusChange(status="running")))
    await settle(follower, client, 10)
    log.add(11, 20)  # tokens 11 to 20 never came live; the end did
    follower.offer(Done(finish_reason="stop", tokens=20))

    assert await asyncio.wait_for(serving, TIMEOUT_S) == "done"
    assert client.text() == texts(1, 20)
    kind, end = client.events()[-1]
    assert kind == "done" and end["tokens"] == 20
