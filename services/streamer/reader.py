"""One SSE client: its position, its bounded buffer, and the task that writes to it.

The hub hands every live message to :meth:`Reader.offer`, which never blocks and
never awaits. While the socket keeps up and nothing else is pending, ``offer`` writes
a fresh message's frame itself (no task switch per token: at 50,000 tokens/s that was
a fifth of a streamer's work). A message older than :data:`FRESH_NS` means this
streamer has fallen behind: its tokens wait up to :data:`STALE_FLUSH_S`
(:class:`LiveWrites`), so the messages of one stream that arrive meanwhile leave as one
frame, and an overloaded streamer (and its clients) handle fewer, bigger frames and
catch up.
Otherwise the reader's own writer task turns pending tokens into frames: coalesced
while bytes still wait in the socket's buffer (so slower clients get bigger frames),
at most ``pace`` frames a second. Past
``SLUICE_CONN_BUFFER_BYTES`` the pending tokens are dropped and the reader catches up
from the log, so a slow client costs a bounded amount of memory. Holes in the live
sequence (a message lost while NATS reconnected, a resume) are filled from the log too.
How events are spelled on the wire is the reader's :class:`Frames`: native SSE by
default, OpenAI chunks for ``/v1/chat/completions``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from typing import Protocol

from aiohttp import hdrs, web

from libs.common import metrics, sse
from libs.common.errors import SlowConsumer
from libs.common.retry import TRANSIENT
from libs.common.store import StreamStore
from libs.common.wire import Done, Failed, StatusChange, TokenBatch, TokensMessage

log = logging.getLogger(__name__)

IDLE_POLL_S = 2.0
FRESH_NS = 25_000_000
STALE_FLUSH_S = 0.02  # one model interval at 50 tokens/s: stale frames carry ~2 tokens
DRAIN_POLL_S = (0.001, 0.1)
RESET_ON_CLOSE = struct.pack("ii", 1, 0)
PING = b'event: ping\ndata: {"t": %d}\n\n'
RECONNECT = b"event: reconnect\ndata: {}\n\n"
EXPIRED = Failed(type="expired", message="the stream's log no longer holds these tokens")


class ClientGone(Exception):
    """The client closed the connection."""


class Sink(Protocol):
    """Where a reader's bytes go: an aiohttp ``StreamResponse``, or a stand-in."""

    async def write(self, data: bytes) -> None: ...


class Frames(Protocol):
    """How a reader spells each event; a dialect without some event returns ``b""`` for it."""

    def opening(self) -> bytes: ...

    def status(self, change: StatusChange) -> bytes: ...

    def tokens(self, last_seq: int, texts: list[str], ts: int) -> bytes: ...

    def terminal(self, terminal: Done | Failed, last_seq: int) -> bytes: ...

    def ping(self) -> bytes: ...

    def reconnect(self) -> bytes: ...


class NativeFrames:
    """The contract's own SSE events: ``status``, ``token``, ``ping``, ``done``, ``error``."""

    def opening(self) -> bytes:
        return sse.RETRY

    def status(self, change: StatusChange) -> bytes:
        payload: dict[str, object] = {"status": change.status}
        if change.position is not None:
            payload["position"] = change.position
        return sse.json_frame("status", payload)

    def tokens(self, last_seq: int, texts: list[str], ts: int) -> bytes:
        return sse.token_frame(last_seq, texts, ts)

    def terminal(self, terminal: Done | Failed, last_seq: int) -> bytes:
        if isinstance(terminal, Done):
            payload = {k: v for k, v in _fields(terminal).items() if v is not None}
            return sse.json_frame("done", payload, last_seq)
        error = {
            "type": terminal.type,
            "message": terminal.message,
            "retryable": terminal.retryable,
        }
        return sse.json_frame("error", error)

    def ping(self) -> bytes:
        return PING % int(time.time() * 1000)

    def reconnect(self) -> bytes:
        return RECONNECT


NATIVE_FRAMES = NativeFrames()


class LiveWrites:
    """Readers with stale live tokens, all written :data:`STALE_FLUSH_S` after the first.

    Writing each stale message at once would keep an overloaded streamer at one frame
    per token; gathering for a window (only once tokens are already late) makes the
    frames bigger the further behind it is, so it and its clients catch up.
    """

    def __init__(self) -> None:
        self._readers: dict[Reader, None] = {}

    def add(self, reader: Reader) -> None:
        if not self._readers:
            asyncio.get_running_loop().call_later(STALE_FLUSH_S, self._write)
        self._readers[reader] = None

    def _write(self) -> None:
        readers, self._readers = self._readers, {}
        for reader in readers:
            reader.write_live()


class Reader:
    def __init__(
        self,
        stream_id: str,
        response: Sink,
        transport: asyncio.Transport | None,
        store: StreamStore,
        after_seq: int,
        *,
        buffer_bytes: int,
        heartbeat_s: float,
        stall_timeout_s: float,
        frames: Frames = NATIVE_FRAMES,
        send_buffer_bytes: int = 0,
    ) -> None:
        self.stream_id = stream_id
        self._response = response
        self._frames = frames
        self._transport = transport
        self._store = store
        self.sent = after_seq
        self._texts: list[str] = []
        self._ts = 0
        self._bytes = 0
        self._statuses: list[bytes] = []
        self._terminal: Done | Failed | None = None
        self._behind = True
        self._closing = False
        self._gone = False
        self._parked = False
        self.live_writes: LiveWrites | None = None
        self._chunked = False
        self._wake = asyncio.Event()
        self._buffer_bytes = buffer_bytes
        self._heartbeat_s = heartbeat_s
        self._stall_timeout_s = stall_timeout_s
        self._min_interval_s = 0.0
        self._last_write = time.monotonic()
        self._last_live = time.monotonic()
        self._opened = time.monotonic()
        self._token_frames = 0
        self._write_since = 0.0
        self._stalled = False
        self._ping_due = False
        self._last_status = b""
        if send_buffer_bytes:
            _set_socket_option(transport, socket.SO_SNDBUF, send_buffer_bytes)

    @property
    def _queued_upto(self) -> int:
        return self.sent + len(self._texts)

    def offer(self, message: TokensMessage) -> None:
        """Take a live message; never blocks."""
        self._last_live = time.monotonic()
        if isinstance(message, TokenBatch):
            if self._write_now(message):
                return
            self._offer_batch(message)
            if self.live_writes is not None and self._texts and self._socket_free():
                self.live_writes.add(self)
                return
        else:
            self._terminal = message
        self._wake.set()

    def _socket_free(self) -> bool:
        """The writer task is parked with nothing but tokens to do, and the socket is empty.

        Then a live frame may go straight to the transport without passing the task, and
        frames keep their order.
        """
        transport = self._transport
        return not (
            transport is None
            or not self._parked
            or self._statuses
            or self._behind
            or self._terminal
            or self._closing
            or self._ping_due
            or self._min_interval_s
            or transport.get_write_buffer_size()
            or transport.is_closing()
        )

    def _write_now(self, batch: TokenBatch) -> bool:
        """Write a fresh live batch at once when nothing else waits; False if not."""
        if (
            self._texts
            or batch.first != self.sent + 1
            or time.time_ns() - batch.ts > FRESH_NS
            or not self._socket_free()
        ):
            return False
        self._write_frame(batch.texts, batch.ts)
        return True

    def write_live(self) -> None:
        """Write the stale tokens gathered in the window as one frame, or leave them to the task."""
        if not self._texts:
            return
        if not self._socket_free():
            self._wake.set()
            return
        texts, ts = self._texts, self._ts
        self._texts, self._bytes = [], 0
        self._write_frame(texts, ts)

    def _write_frame(self, texts: list[str], ts: int) -> None:
        """One token frame straight to the transport, in the response's transfer encoding."""
        assert self._transport is not None
        frame = self._token_frame(texts, ts)
        self._transport.write(b"%x\r\n%s\r\n" % (len(frame), frame) if self._chunked else frame)
        self._last_write = time.monotonic()

    def _offer_batch(self, batch: TokenBatch) -> None:
        if self._behind or batch.last <= self._queued_upto:
            return
        if batch.first > self._queued_upto + 1:
            self._behind = True
            return
        texts = batch.texts[self._queued_upto + 1 - batch.first :]
        if not self._texts:
            self._ts = batch.ts
        self._texts.extend(texts)
        self._bytes += sum(len(text) for text in texts) + 16 * len(texts)
        if self._bytes > self._buffer_bytes:
            self._texts, self._bytes, self._behind = [], 0, True

    def status(self, change: StatusChange) -> None:
        frame = self._frames.status(change)
        if frame and frame != self._last_status:
            self._last_status = frame
            self._statuses.append(frame)
            self._wake.set()

    def pace(self, max_events_per_s: float) -> None:
        self._min_interval_s = 1.0 / max_events_per_s if max_events_per_s > 0 else 0.0
        self._wake.set()

    def close_for_shutdown(self) -> None:
        self._closing = True
        self._wake.set()

    async def open(self, first_status: StatusChange) -> None:
        """Write the opening and the stream's status: the client's first visible event.

        The native endpoint calls this before subscribing, so the event does not wait
        for the subscription's round trip to NATS, which queues behind live traffic.
        """
        sink = self._response
        if isinstance(sink, web.StreamResponse):
            self._chunked = sink.headers.get(hdrs.TRANSFER_ENCODING) == "chunked"
        self.status(first_status)
        try:
            await self._write(self._frames.opening() + b"".join(self._statuses))
        except ClientGone:
            self._gone = True
        self._statuses.clear()

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
            while True:
                if await self._step():
                    return "done"
                if self._closing:
                    await self._write(self._frames.reconnect())
                    return "shutdown"
        except ClientGone:
            return "client_gone"
        except SlowConsumer:
            return "slow_consumer"

    async def _step(self) -> bool:
        """One round of the writer; True once the terminal event is written."""
        if not (self._texts or self._statuses or self._behind or self._terminal or self._closing):
            await self._idle()
        self._wake.clear()
        if self._statuses:
            frames, self._statuses = b"".join(self._statuses), []
            await self._write(frames)
        if self._min_interval_s:
            await asyncio.sleep(
                max(0.0, self._last_write + self._min_interval_s - time.monotonic())
            )
        if self._behind:
            return await self._catch_up()
        if self._texts:
            await self._write_tokens(self._texts, self._ts)
        if self._terminal is not None:
            if self.sent < self._terminal.tokens:
                self._behind = True
                return False
            return await self._write_terminal(self._terminal)
        return False

    async def _idle(self) -> None:
        """Wait for work, without a timer per frame: the hub's :meth:`tick` wakes quiet readers."""
        self._parked = True
        try:
            await self._wake.wait()
        finally:
            self._parked = False
        if self._ping_due:
            self._ping_due = False
            await self._write(self._frames.ping())

    async def _catch_up(self) -> bool:
        """Serve from the log until it has nothing newer; True if it held the end."""
        while True:
            try:
                entries = await self._store.read(self.stream_id, self.sent)
            except TRANSIENT as exc:
                log.warning("log read failed: %r", exc, extra={"stream_id": self.stream_id})
                await asyncio.sleep(0.25)
                continue
            self._texts, self._bytes = [], 0
            self._behind = False
            batch_texts: list[str] = []
            batch_ts = 0
            for entry in entries:
                if isinstance(entry, TokenBatch):
                    if entry.first > self.sent + len(batch_texts) + 1:
                        return await self._write_terminal(EXPIRED)
                    skip = self.sent + len(batch_texts) + 1 - entry.first
                    if not batch_texts:
                        batch_ts = entry.ts
                    batch_texts.extend(entry.texts[max(0, skip) :])
                    continue
                if batch_texts:
                    await self._write_tokens(batch_texts, batch_ts)
                return await self._write_terminal(entry)
            if batch_texts:
                await self._write_tokens(batch_texts, batch_ts)
            if len(entries) < self._store.read_chunk:
                return False

    async def _write_tokens(self, texts: list[str], ts: int) -> None:
        self._texts, self._bytes = [], 0
        await self._write(self._token_frame(texts, ts))

    def _token_frame(self, texts: list[str], ts: int) -> bytes:
        """The frame for the next ``texts``, counted as sent."""
        last = self.sent + len(texts)
        frame = self._frames.tokens(last, texts, ts)
        self.sent = last
        if metrics.sampled(self._token_frames):
            metrics.streamer_delivery_lag.record(max(0, time.time_ns() - ts) / 1e9)
        if not self._token_frames:
            metrics.streamer_first_frame.record(time.monotonic() - self._opened)
        self._token_frames += 1
        return frame

    async def _write_terminal(self, terminal: Done | Failed) -> bool:
        await self._write(self._frames.terminal(terminal, self.sent))
        return True

    async def _write(self, data: bytes) -> None:
        self._write_since = time.monotonic()
        try:
            await self._response.write(data)
            await self._drained()
        except (ConnectionError, RuntimeError) as exc:
            if self._stalled:
                raise SlowConsumer(f"reader stalled for {self._stall_timeout_s:g}s") from None
            raise ClientGone(str(exc)) from None
        self._write_since = 0.0
        self._last_write = time.monotonic()

    async def _drained(self) -> None:
        """Wait until the socket has taken every byte written so far.

        Meanwhile new tokens pile up and leave as one larger frame: a client that keeps up
        gets each token at once, a slower one fewer, bigger frames. The wait counts as part
        of the write for the stall watchdog. It polls with backoff because the transport
        tells only when it crosses its high-water mark, not when it empties.
        """
        transport = self._transport
        delay, longest = DRAIN_POLL_S
        while transport is not None and transport.get_write_buffer_size():
            if transport.is_closing():
                raise ConnectionResetError("the connection closed with bytes unsent")
            await asyncio.sleep(delay)
            delay = min(2 * delay, longest)

    def tick(self, now: float) -> None:
        """The hub's once-a-second look at this reader, so that no frame pays for a timer.

        Drops a reader whose write has hung past the stall timeout, asks for a ``ping``
        on a quiet stream, and sends a reader whose live traffic went silent to the log
        (a message lost while NATS reconnected must not leave it waiting forever).
        """
        if self._write_since and now - self._write_since > self._stall_timeout_s:
            self._stalled = True
            self._abort(SlowConsumer(f"reader stalled for {self._stall_timeout_s:g}s"))
            return
        if now - self._last_write >= self._heartbeat_s:
            self._ping_due = True
            self._wake.set()
        if now - self._last_live >= IDLE_POLL_S:
            self._last_live = now
            self._behind = True
            self._wake.set()

    def _abort(self, error: SlowConsumer) -> None:
        """Tell a stalled client why, without waiting for it, and reset the connection.

        The error frame reaches the client only if its socket has room; the reset (rather
        than a close that would wait for the peer to read) frees the kernel's send buffer at
        once and shows the client a broken connection, which EventSource answers by resuming.
        """
        if self._transport is None:
            return
        failed = Failed(type=error.type, message=error.message, retryable=True, tokens=self.sent)
        self._transport.write(self._frames.terminal(failed, self.sent))
        _set_socket_option(self._transport, socket.SO_LINGER, RESET_ON_CLOSE)
        self._transport.abort()


def _set_socket_option(
    transport: asyncio.Transport | None, option: int, value: int | bytes
) -> None:
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, option, value)


def _fields(terminal: Done) -> dict[str, object]:
    return {field: getattr(terminal, field) for field in terminal.__struct_fields__}
