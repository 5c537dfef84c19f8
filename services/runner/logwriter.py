"""Group commit of token batches: one Redis round trip per cycle for all streams.

Every generation hands its flush to the writer and waits; the writer logs whatever
has gathered since its last cycle in one pipeline, then publishes each batch. Under
load a cycle carries many streams' batches, so the cost per token falls with the
load instead of rising; at rest a batch goes out alone, at once. Log-before-publish
holds per batch, and a stream's batches stay in order because each generation
waits for its previous flush (so two of its batches are never in flight at once).
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

from nats.aio.client import Client as NATS

from libs.common import names
from libs.common.retry import retry_forever
from libs.common.store import StreamStore
from libs.common.wire import TokenBatch

IN_FLIGHT = 4

Pending = tuple[str, list[tuple[TokenBatch, bytes]], asyncio.Future[None]]


class LogWriter:
    def __init__(self, store: StreamStore, nc: NATS) -> None:
        self._store = store
        self._nc = nc
        self._pending: list[Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._commits: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        for commit in list(self._commits):
            commit.cancel()
        await asyncio.gather(*self._commits, return_exceptions=True)

    async def write(self, stream_id: str, batches: list[tuple[TokenBatch, bytes]]) -> None:
        """Log then publish ``batches``; returns when both are done."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((stream_id, batches, done))
        self._wake.set()
        await done

    async def _loop(self) -> None:
        """Start a commit as soon as there is work and a commit slot is free.

        Up to ``IN_FLIGHT`` commits run at once, so a token never waits for an earlier
        round trip to come back; when all are busy, the next one carries everything
        that gathered meanwhile.
        """
        slots = asyncio.Semaphore(IN_FLIGHT)
        while True:
            await self._wake.wait()
            await slots.acquire()
            self._wake.clear()
            cycle, self._pending = self._pending, []
            commit = asyncio.create_task(self._commit(cycle))
            self._commits.add(commit)
            commit.add_done_callback(self._commits.discard)
            commit.add_done_callback(lambda _: slots.release())

    async def _commit(self, cycle: list[Pending]) -> None:
        entries = [(sid, batch, payload) for sid, batches, _ in cycle for batch, payload in batches]
        await retry_forever(lambda: self._store.append(entries), "log append", "*")
        for stream_id, batches, done in cycle:
            subject = names.stream_subject(stream_id, "tokens")
            for _, payload in batches:
                await self._publish(subject, payload, stream_id)
            if not done.done():
                done.set_result(None)

    async def _publish(self, subject: str, payload: bytes, stream_id: str) -> None:
        await retry_forever(lambda: self._nc.publish(subject, payload), "publish", stream_id)
