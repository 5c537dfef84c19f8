"""Flush control and group commit for every generation of a runner.

Generations push each token into their stream's :class:`TokenBuffer` and never wait
for the log. The writer decides when a stream flushes — the first token at once,
then at most once per ``SLUICE_RUNNER_FLUSH_MS`` (wider while the runner is
saturated: :mod:`services.runner.window`) with up to
``SLUICE_RUNNER_FLUSH_TOKENS`` tokens per log entry — and commits whatever is ready
across all streams in one Redis call, then publishes each batch. Up to
``IN_FLIGHT`` commits run at once, so a token never waits for an earlier round trip;
a stream has at most one batch in flight, so its entries are logged and published in
order, and log-before-publish holds per batch. Each batch carries its attempt's epoch:
a stream that moved to another runner refuses it in the same script, and its buffer
is fenced (the batch is not published, the rest dropped, the generation told).

A commit starts at once when none is in flight; while some are, the next waits
until ``COMMIT_GAP_S`` (0.5 ms) after the last one started and takes everything
that arrived meanwhile: a commit's fixed cost (~50 µs of CPU in redis-py,
and two writes that wake Redis and NATS, ~50 µs each on a busy machine) would
otherwise be paid for every few tokens once round trips are short, and under load one
commit carries many streams, so the cost per token falls as load rises. A 2 ms gap
held tokens back up to 2 ms at 50 streams (the ``committed`` hop's p99 was 3 ms, 0.6 ms
after) for no CPU it measurably saved (docs/decisions/0020).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from libs.common import metrics, names
from libs.common.channels import Channel, Channels
from libs.common.direct_nats import DirectNATS
from libs.common.retry import TRANSIENT, retry_forever
from libs.common.store import StreamStore
from libs.common.tasks import cancel_and_wait
from libs.common.wire import TokenBatch, tokens_codec
from services.runner.window import FlushWindow

IN_FLIGHT = 4
COMMIT_GAP_S = 0.0005
MAX_PENDING_TOKENS = 8_192


class TokenBuffer:
    """One stream's tokens that are not logged yet, and where its numbering stands."""

    __slots__ = (
        "channels",
        "closing",
        "drained",
        "epoch",
        "fenced",
        "full",
        "in_flight",
        "last_flush",
        "numbered",
        "on_fenced",
        "scheduled",
        "space",
        "stamps",
        "stream_id",
        "subject",
        "texts",
    )

    def __init__(self, stream_id: str, on_fenced: Callable[[], None]) -> None:
        self.stream_id = stream_id
        self.epoch = 0
        self.fenced = False
        self.on_fenced = on_fenced
        self.subject = names.stream_subject(stream_id, "tokens")
        self.texts: list[str] = []
        self.stamps: list[int] = []
        self.channels: Channels | None = None  # None while every pending token is answer text
        self.numbered = 0
        self.last_flush = 0.0
        self.in_flight = False
        self.scheduled = False
        self.closing = False
        self.drained: asyncio.Future[None] | None = None
        self.space = asyncio.Event()
        self.space.set()
        self.full = False  # ``space`` cleared, as a plain flag the model's loop checks per token


Entry = tuple[TokenBuffer, TokenBatch, bytes]


class LogWriter:
    def __init__(
        self, store: StreamStore, nc: DirectNATS, flush_s: float, flush_tokens: int
    ) -> None:
        self._store = store
        self._nc = nc
        self.window = FlushWindow(flush_s)
        self._flush_tokens = flush_tokens
        self._ready: dict[TokenBuffer, None] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._commits: set[asyncio.Task[None]] = set()
        self._watch: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())
        self._watch = asyncio.create_task(self.window.watch())

    async def stop(self) -> None:
        await cancel_and_wait([self._task, self._watch, *self._commits])

    def push(self, buffer: TokenBuffer, text: str, stamp: int) -> None:
        """Take one token; never waits. ``buffer.space`` clears when the buffer is full."""
        if buffer.fenced:
            return
        texts = buffer.texts
        texts.append(text)
        buffer.stamps.append(stamp)
        if buffer.channels is not None:
            buffer.channels.append(None)
        if len(texts) >= MAX_PENDING_TOKENS:
            buffer.space.clear()
            buffer.full = True
        if not (buffer.in_flight or buffer.scheduled):
            self._consider(buffer)

    def set_channel(self, buffer: TokenBuffer, channel: Channel) -> None:
        """Make the token just pushed one of ``channel`` rather than answer text.

        It is still in ``buffer.texts``: tokens are only taken by the commit loop's task.
        """
        if buffer.channels is None:
            buffer.channels = [None] * len(buffer.texts)
        buffer.channels[-1] = channel

    async def drain(self, buffer: TokenBuffer) -> None:
        """Flush what is left now, whatever the window, and wait until it is published."""
        buffer.closing = True
        if not buffer.fenced and (buffer.texts or buffer.in_flight):
            buffer.drained = asyncio.get_running_loop().create_future()
            self._consider(buffer)
            await buffer.drained

    def _consider(self, buffer: TokenBuffer) -> None:
        if buffer.in_flight or buffer.scheduled or not buffer.texts:
            return
        wait = buffer.last_flush + self.window.seconds - time.monotonic()
        if wait > 0 and not buffer.closing and len(buffer.texts) < self._flush_tokens:
            buffer.scheduled = True
            asyncio.get_running_loop().call_later(wait, self._due, buffer)
            return
        self._ready[buffer] = None
        if not self._wake.is_set():
            self._wake.set()

    def _due(self, buffer: TokenBuffer) -> None:
        buffer.scheduled = False
        self._consider(buffer)

    async def _loop(self) -> None:
        slots = asyncio.Semaphore(IN_FLIGHT)
        started = 0.0
        while True:
            await self._wake.wait()
            gap = started + COMMIT_GAP_S - time.monotonic()
            if gap > 0 and self._commits:  # nothing in flight: this commit goes at once
                await asyncio.sleep(gap)
            await slots.acquire()
            started = time.monotonic()
            self._wake.clear()
            buffers = list(self._ready)
            self._ready.clear()
            commit = asyncio.create_task(self._commit(buffers, self._take(buffers)))
            self._commits.add(commit)
            commit.add_done_callback(self._commits.discard)
            commit.add_done_callback(lambda _: slots.release())

    def _take(self, buffers: list[TokenBuffer]) -> list[Entry]:
        """Number the buffers' pending tokens into log entries of at most flush_tokens."""
        now = time.monotonic()
        entries: list[Entry] = []
        size = self._flush_tokens
        encode = tokens_codec.encode
        for buffer in buffers:
            texts, stamps, channels = buffer.texts, buffer.stamps, buffer.channels
            buffer.texts, buffer.stamps, buffer.channels = [], [], None
            buffer.in_flight, buffer.last_flush = True, now
            if buffer.full:
                buffer.space.set()
                buffer.full = False
            first = buffer.numbered + 1
            if len(texts) <= size:  # the usual case: one entry, no copy
                batch = TokenBatch(first=first, texts=texts, ts=stamps[0], channels=channels)
                entries.append((buffer, batch, encode(batch)))
            else:
                for offset in range(0, len(texts), size):
                    chunk = texts[offset : offset + size]
                    kinds = None if channels is None else channels[offset : offset + size]
                    batch = TokenBatch(
                        first=first + offset, texts=chunk, ts=stamps[offset], channels=kinds
                    )
                    entries.append((buffer, batch, encode(batch)))
            buffer.numbered += len(texts)
        return entries

    async def _commit(self, buffers: list[TokenBuffer], entries: list[Entry]) -> None:
        logged = [
            (buffer.stream_id, batch, payload, buffer.epoch) for buffer, batch, payload in entries
        ]
        traced = [b.ts for _, b, _ in entries if metrics.hop_sampled(b.first, len(b.texts))]
        _hops("committed", traced)
        fenced = await retry_forever(lambda: self._store.append(logged), "log append", "*")
        _hops("logged", traced)
        if fenced:
            entries = [entry for entry in entries if entry[0].stream_id not in fenced]
        try:
            await self._nc.publish_many(
                [(buffer.subject, payload) for buffer, _, payload in entries]
            )
        except TRANSIENT:  # nothing was queued: publish one by one, riding out the outage
            for buffer, _, payload in entries:
                await self._publish(buffer, payload)
        _hops("published", traced)
        metrics.runner_tokens.add(sum(len(batch.texts) for _, batch, _ in entries))
        for buffer in buffers:
            buffer.in_flight = False
            if buffer.stream_id in fenced:
                _fence(buffer)
            if buffer.texts:
                self._consider(buffer)
            elif buffer.drained is not None and not buffer.drained.done():
                buffer.drained.set_result(None)

    async def _publish(self, buffer: TokenBuffer, payload: bytes) -> None:
        await retry_forever(
            lambda: self._nc.publish(buffer.subject, payload), "publish", buffer.stream_id
        )


def _hops(hop: str, emitted: list[int]) -> None:
    if emitted:
        now = time.time_ns()
        for stamp in emitted:
            metrics.record_hop(hop, stamp, now)


def _fence(buffer: TokenBuffer) -> None:
    """The stream moved on: drop what was not logged and tell the generation to stop."""
    buffer.fenced = True
    buffer.texts, buffer.stamps = [], []
    if buffer.full:
        buffer.space.set()
        buffer.full = False
    buffer.on_fenced()
