"""One client of a stream: its position, its bounded buffer, and the task that writes to it.

The hub hands every live message to :meth:`Reader.offer`, which never blocks and
never awaits; fresh tokens may leave at once by the fast path of
:mod:`services.streamer.direct`. Otherwise the reader's own writer task turns pending
tokens into frames: coalesced while bytes still wait in the socket's buffer (so slower
clients get bigger frames), at most ``pace`` frames a second. Past
``SLUICE_CONN_BUFFER_BYTES`` the pending tokens are dropped and the reader catches up
from the log, so a slow client costs a bounded amount of memory. Holes in the live
sequence (a message lost while NATS reconnected, a resume) are filled from the log too.
How events are spelled on the wire is the reader's :class:`~services.streamer.frames.Frames`:
native SSE by default, OpenAI chunks for ``/v1/chat/completions``, JSON messages on a
stream's WebSocket; how tokens become frames is its :class:`~services.streamer.flush.Flush`.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from aiohttp import hdrs, web

from libs.common import metrics
from libs.common.channels import Channels, joined
from libs.common.errors import SlowConsumer, SluiceError
from libs.common.retry import retry_forever
from libs.common.settings import Settings
from libs.common.store import StreamStore
from libs.common.wire import Done, Failed, StatusChange, TokenBatch, TokensMessage
from services.streamer.direct import FRESH_NS, ClientSocket, Envelope, LiveWrites, chunk
from services.streamer.flush import ADAPTIVE, Flush
from services.streamer.frames import NATIVE_FRAMES, Frames

IDLE_POLL_S = 2.0
EXPIRED = Failed(type="expired", message="the stream's log no longer holds these tokens")


class ClientGone(Exception):
    """The client closed the connection."""


class ClientSink(Protocol):
    """Where a reader's bytes go: an aiohttp ``StreamResponse``, or a stand-in."""

    async def write(self, data: bytes) -> None: ...


@runtime_checkable
class EnvelopedSink(ClientSink, Protocol):
    """A sink that wraps what it writes, so direct writes must be wrapped alike."""

    def envelope(self, frame: bytes) -> bytes: ...


def envelope_of(sink: ClientSink) -> Envelope | None:
    if isinstance(sink, web.StreamResponse):
        return chunk if sink.headers.get(hdrs.TRANSFER_ENCODING) == "chunked" else None
    return sink.envelope if isinstance(sink, EnvelopedSink) else None


@dataclass(frozen=True, slots=True)
class ReaderLimits:
    """How much a reader holds and how long it waits, from settings."""

    buffer_bytes: int
    heartbeat_s: float
    stall_timeout_s: float
    send_buffer_bytes: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> ReaderLimits:
        return cls(
            buffer_bytes=settings.conn_buffer_bytes,
            heartbeat_s=settings.heartbeat_s,
            stall_timeout_s=settings.stall_timeout_s,
            send_buffer_bytes=settings.conn_sndbuf_bytes,
        )


@dataclass(slots=True)
class Pending:
    """What waits for the writer task; ``behind`` means the log must be read first."""

    statuses: list[bytes] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    channels: Channels | None = None
    ts: int = 0
    size: int = 0
    terminal: Done | Failed | None = None
    behind: bool = True
    closing: bool = False
    ping_due: bool = False

    def has_work(self) -> bool:
        """Work for the writer task besides a ping."""
        return bool(self.statuses or self.texts or self.behind or self.terminal or self.closing)

    def drop_tokens(self) -> None:
        self.texts, self.channels, self.size = [], None, 0


@dataclass(slots=True)
class Timing:
    """When things happened; ``write_since`` is when the write under way began (0: none)."""

    opened: float
    last_write: float
    last_live: float
    write_since: float = 0.0
    min_interval_s: float = 0.0

    @classmethod
    def starting_now(cls) -> Timing:
        now = time.monotonic()
        return cls(opened=now, last_write=now, last_live=now)


class Reader:
    def __init__(
        self,
        stream_id: str,
        sink: ClientSink,
        transport: asyncio.Transport | None,
        store: StreamStore,
        after_seq: int,
        limits: ReaderLimits,
        frames: Frames = NATIVE_FRAMES,
        flush: Flush = ADAPTIVE,
    ) -> None:
        self.stream_id = stream_id
        self.sent = after_seq
        self.live_writes: LiveWrites | None = None
        self._sink = sink
        self._socket = (
            None if transport is None else ClientSocket(transport, limits.send_buffer_bytes)
        )
        self._store = store
        self._limits = limits
        self._frames = frames
        self._flush = flush
        self._pending = Pending()
        self._timing = Timing.starting_now()
        self._timing.min_interval_s = flush.interval_s
        self._wake = asyncio.Event()
        self._parked = False
        self._gone = False
        self._stalled = False
        self._token_frames = 0
        self._last_status = b""

    @property
    def _queued_upto(self) -> int:
        return self.sent + len(self._pending.texts)

    def offer(self, message: TokensMessage) -> None:
        """Take a live message; never blocks."""
        self._timing.last_live = time.monotonic()
        if isinstance(message, TokenBatch):
            if self._write_now(message):
                return
            self._offer_batch(message)
            if self.live_writes is not None and self._pending.texts and self._socket_free():
                self.live_writes.add(self)
                return
        else:
            self._pending.terminal = message
        self._wake.set()

    def _socket_free(self) -> bool:
        """The writer task is parked with nothing but tokens to do, and the socket is empty.

        Then a live frame may go straight to the transport without passing the task, and
        frames keep their order.
        """
        pending = self._pending
        return (
            self._socket is not None
            and self._parked
            and not (
                pending.statuses
                or pending.behind
                or pending.terminal
                or pending.closing
                or pending.ping_due
                or self._timing.min_interval_s
            )
            and self._socket.idle()
        )

    def _write_now(self, batch: TokenBatch) -> bool:
        """Write a fresh live batch at once when nothing else waits; False if not."""
        if (
            self._pending.texts
            or batch.first != self.sent + 1
            or time.time_ns() - batch.ts > FRESH_NS
            or not self._socket_free()
        ):
            return False
        self._write_direct(batch.texts, batch.ts, batch.channels)
        return True

    def write_live(self) -> None:
        """Write the stale tokens gathered in the window as one frame, or leave them to the task."""
        pending = self._pending
        if not pending.texts:
            return
        if not self._socket_free():
            self._wake.set()
            return
        texts, ts, channels = pending.texts, pending.ts, pending.channels
        pending.drop_tokens()
        self._write_direct(texts, ts, channels)

    def _write_direct(self, texts: list[str], ts: int, channels: Channels | None) -> None:
        assert self._socket is not None
        self._socket.write(self._token_frame(texts, ts, channels))
        self._timing.last_write = time.monotonic()

    def _offer_batch(self, batch: TokenBatch) -> None:
        pending = self._pending
        if pending.behind or batch.last <= self._queued_upto:
            return
        if batch.first > self._queued_upto + 1:
            pending.behind = True
            return
        skip = self._queued_upto + 1 - batch.first
        texts = batch.texts[skip:]
        if not pending.texts:
            pending.ts = batch.ts
        if pending.channels is not None or batch.channels is not None:  # not for text alone
            pending.channels = joined(
                pending.channels, len(pending.texts), batch.channels, skip, len(texts)
            )
        pending.texts.extend(texts)
        pending.size += sum(len(text) for text in texts) + 16 * len(texts)
        if pending.size > self._limits.buffer_bytes:
            pending.drop_tokens()
            pending.behind = True

    def status(self, change: StatusChange) -> None:
        frame = self._frames.status(change)
        if frame and frame != self._last_status:
            self._last_status = frame
            self._pending.statuses.append(frame)
            self._wake.set()

    def pace(self, max_events_per_s: float) -> None:
        paced = 1.0 / max_events_per_s if max_events_per_s > 0 else 0.0
        self._timing.min_interval_s = max(paced, self._flush.interval_s)
        self._wake.set()

    def hang_up(self) -> None:
        """The client closed its side (a WebSocket's close frame): stop at the next step."""
        self._gone = True
        self._wake.set()

    def close_for_shutdown(self) -> None:
        self._pending.closing = True
        self._wake.set()

    async def open(self, first_status: StatusChange) -> None:
        """Write the opening and the stream's status: the client's first visible event.

        The native endpoint calls this before subscribing, so the event does not wait
        for the subscription's round trip to NATS, which queues behind live traffic.
        """
        if self._socket is not None:
            self._socket.envelope = envelope_of(self._sink)
        self.status(first_status)
        try:
            await self._write(self._frames.opening() + b"".join(self._pending.statuses))
        except ClientGone:
            self._gone = True
        self._pending.statuses.clear()

    async def serve(self, first_status: StatusChange | None = None) -> str:
        """Write until the stream ends, the client leaves or the server shuts down.

        Opens the stream first unless :meth:`open` did. Returns why it stopped:
        ``done``, ``client_gone``, ``slow_consumer`` or ``shutdown``; every reason but
        ``done`` counts as a disconnect.
        """
        if first_status is not None:
            await self.open(first_status)
        reason = "client_gone" if self._gone else await self._serve()
        if reason != "done":
            metrics.streamer_disconnects.add(1, {"reason": reason})
        return reason

    async def _serve(self) -> str:
        try:
            while not self._gone:
                if await self._step():
                    return "done"
                if self._pending.closing:
                    await self._write(self._frames.reconnect())
                    return "shutdown"
            return "slow_consumer" if self._stalled else "client_gone"
        except ClientGone:
            return "client_gone"
        except SlowConsumer:
            return "slow_consumer"

    async def _step(self) -> bool:
        """One round of the writer; True once the terminal event is written."""
        pending = self._pending
        if not pending.has_work():
            await self._idle()
        self._wake.clear()
        if pending.statuses:
            frames, pending.statuses = b"".join(pending.statuses), []
            await self._write(frames)
        if self._timing.min_interval_s:
            due = self._timing.last_write + self._timing.min_interval_s
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        if pending.behind:
            return await self._catch_up()
        if pending.texts:
            await self._write_tokens(pending.texts, pending.ts, pending.channels)
        if pending.terminal is not None:
            if self.sent < pending.terminal.tokens:
                pending.behind = True
                return False
            return await self._write_terminal(pending.terminal)
        return False

    async def _idle(self) -> None:
        """Wait for work, without a timer per frame: the hub's :meth:`tick` wakes quiet readers."""
        self._parked = True
        try:
            await self._wake.wait()
        finally:
            self._parked = False
        if self._pending.ping_due:
            self._pending.ping_due = False
            await self._write(self._frames.ping())

    async def _catch_up(self) -> bool:
        """Serve from the log until it has nothing newer; True if it held the end."""
        while True:
            entries = await retry_forever(
                lambda: self._store.read(self.stream_id, self.sent), "log read", self.stream_id
            )
            self._pending.drop_tokens()
            self._pending.behind = False
            batch_texts: list[str] = []
            batch_channels: Channels | None = None
            batch_ts = 0
            for entry in entries:
                if isinstance(entry, TokenBatch):
                    if entry.first > self.sent + len(batch_texts) + 1:
                        return await self._write_terminal(EXPIRED)
                    skip = max(0, self.sent + len(batch_texts) + 1 - entry.first)
                    if not batch_texts:
                        batch_ts = entry.ts
                    texts = entry.texts[skip:]
                    batch_channels = joined(
                        batch_channels, len(batch_texts), entry.channels, skip, len(texts)
                    )
                    batch_texts.extend(texts)
                    continue
                if batch_texts:
                    await self._write_tokens(batch_texts, batch_ts, batch_channels)
                return await self._write_terminal(entry)
            if batch_texts:
                await self._write_tokens(batch_texts, batch_ts, batch_channels)
            if len(entries) < self._store.read_chunk:
                return False

    async def _write_tokens(self, texts: list[str], ts: int, channels: Channels | None) -> None:
        self._pending.drop_tokens()
        await self._write(self._token_frame(texts, ts, channels))

    def _token_frame(self, texts: list[str], ts: int, channels: Channels | None) -> bytes:
        """The frame for the next ``texts``, counted as sent."""
        last = self.sent + len(texts)
        if self._flush.per_token:
            first = self.sent + 1
            frame = b"".join(
                self._frames.tokens(
                    first + i, [text], ts, None if channels is None else channels[i : i + 1]
                )
                for i, text in enumerate(texts)
            )
        else:
            frame = self._frames.tokens(last, texts, ts, channels)
        first, self.sent = self.sent + 1, last
        if metrics.sampled(self._token_frames):
            metrics.streamer_delivery_lag.record(max(0, time.time_ns() - ts) / 1e9)
        if metrics.hop_sampled(first, len(texts)):
            metrics.record_hop("written", ts, time.time_ns())
        if not self._token_frames:
            metrics.streamer_first_frame.record(time.monotonic() - self._timing.opened)
        self._token_frames += 1
        return frame

    async def _write_terminal(self, terminal: Done | Failed) -> bool:
        await self._write(self._frames.terminal(terminal, self.sent))
        return True

    async def fail(self, error: SluiceError) -> None:
        """End the response with a retryable ``error`` once it has begun: never a cut body."""
        failed = Failed(type=error.type, message=error.message, retryable=True, tokens=self.sent)
        with suppress(ClientGone, SlowConsumer):
            await self._write_terminal(failed)

    async def _write(self, data: bytes) -> None:
        """Write and wait until the socket took it all; the wait counts for the stall watchdog.

        Meanwhile new tokens pile up and leave as one larger frame: a client that keeps up
        gets each token at once, a slower one fewer, bigger frames.
        """
        self._timing.write_since = time.monotonic()
        try:
            await self._sink.write(data)
            if self._socket is not None:
                await self._socket.drained()
        except (ConnectionError, RuntimeError) as exc:
            if self._stalled:
                raise SlowConsumer(self._stall_message()) from None
            raise ClientGone(str(exc)) from None
        self._timing.write_since = 0.0
        self._timing.last_write = time.monotonic()

    def _stall_message(self) -> str:
        return f"reader stalled for {self._limits.stall_timeout_s:g}s"

    def tick(self, now: float) -> None:
        """The hub's once-a-second look at this reader, so that no frame pays for a timer.

        Drops a reader whose write has hung past the stall timeout, asks for a ``ping``
        on a quiet stream, and sends a reader whose live traffic went silent to the log
        (a message lost while NATS reconnected must not leave it waiting forever).
        """
        timing = self._timing
        if timing.write_since and now - timing.write_since > self._limits.stall_timeout_s:
            self._stalled = True
            self._abort(SlowConsumer(self._stall_message()))
            return
        if now - timing.last_write >= self._limits.heartbeat_s:
            self._pending.ping_due = True
            self._wake.set()
        if now - timing.last_live >= IDLE_POLL_S:
            timing.last_live = now
            self._pending.behind = True
            self._wake.set()

    def _abort(self, error: SlowConsumer) -> None:
        """Tell a stalled client why, without waiting for it, and reset the connection.

        The error frame reaches the client only if its socket has room.
        """
        if self._socket is None:
            return
        failed = Failed(type=error.type, message=error.message, retryable=True, tokens=self.sent)
        self._socket.reset(self._frames.terminal(failed, self.sent))
