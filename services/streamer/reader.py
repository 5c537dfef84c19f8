"""One SSE client: its position, its bounded buffer, and the task that writes to it.

The hub hands every live message to :meth:`Reader.offer`, which never blocks and
never awaits. The reader's own writer task turns pending tokens into frames: at once
while the socket keeps up, coalesced while the socket's buffer is full (so slower
clients get bigger frames), at most ``pace`` frames a second. Past
``SLUICE_CONN_BUFFER_BYTES`` the pending tokens are dropped and the reader catches up
from the log, so a slow client costs a bounded amount of memory. Holes in the live
sequence (a message lost while NATS reconnected, a resume) are filled from the log too.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from libs.common import metrics, sse
from libs.common.errors import SlowConsumer
from libs.common.retry import TRANSIENT
from libs.common.store import StreamStore
from libs.common.wire import Done, Failed, StatusChange, TokenBatch, TokensMessage

log = logging.getLogger(__name__)

IDLE_POLL_S = 2.0
PING = b'event: ping\ndata: {"t": %d}\n\n'
RECONNECT = b"event: reconnect\ndata: {}\n\n"
EXPIRED = Failed(type="expired", message="the stream's log no longer holds these tokens")


class ClientGone(Exception):
    """The client closed the connection."""


class Reader:
    def __init__(
        self,
        stream_id: str,
        response: web.StreamResponse,
        transport: asyncio.Transport | None,
        store: StreamStore,
        after_seq: int,
        *,
        buffer_bytes: int,
        heartbeat_s: float,
        stall_timeout_s: float,
    ) -> None:
        self.stream_id = stream_id
        self._response = response
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
        self._wake = asyncio.Event()
        self._buffer_bytes = buffer_bytes
        self._heartbeat_s = heartbeat_s
        self._stall_timeout_s = stall_timeout_s
        self._min_interval_s = 0.0
        self._last_write = time.monotonic()
        self._last_live = time.monotonic()
        self._opened = time.monotonic()
        self._first_frame = True
        self._write_since = 0.0
        self._stalled = False

    @property
    def _queued_upto(self) -> int:
        return self.sent + len(self._texts)

    def offer(self, message: TokensMessage) -> None:
        """Take a live message; never blocks."""
        self._last_live = time.monotonic()
        if isinstance(message, TokenBatch):
            self._offer_batch(message)
        else:
            self._terminal = message
        self._wake.set()

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
        payload: dict[str, object] = {"status": change.status}
        if change.position is not None:
            payload["position"] = change.position
        self._statuses.append(sse.json_frame("status", payload))
        self._wake.set()

    def pace(self, max_events_per_s: float) -> None:
        self._min_interval_s = 1.0 / max_events_per_s if max_events_per_s > 0 else 0.0
        self._wake.set()

    def close_for_shutdown(self) -> None:
        self._closing = True
        self._wake.set()

    async def serve(self, first_status: StatusChange) -> str:
        """Write until the stream ends, the client leaves or the server shuts down.

        Returns why it stopped: ``done``, ``client_gone``, ``slow_consumer`` or ``shutdown``.
        """
        self.status(first_status)
        try:
            await self._write(sse.RETRY + b"".join(self._statuses))
            self._statuses.clear()
            while True:
                if await self._step():
                    return "done"
                if self._closing:
                    await self._write(RECONNECT)
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
        """Wait for work; ping a quiet client, and poll the log if live traffic went silent."""
        timeout = min(self._heartbeat_s, IDLE_POLL_S)
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            now = time.monotonic()
            if now - self._last_write >= self._heartbeat_s:
                await self._write(PING % int(time.time() * 1000))
            if now - self._last_live >= IDLE_POLL_S:
                self._last_live = now
                self._behind = True

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
        last = self.sent + len(texts)
        frame = sse.token_frame(last, texts, ts)
        self.sent = last
        now_ns = time.time_ns()
        metrics.streamer_delivery_lag.record(max(0, now_ns - ts) / 1e9)
        if self._first_frame:
            self._first_frame = False
            metrics.streamer_first_frame.record(time.monotonic() - self._opened)
        await self._write(frame)

    async def _write_terminal(self, terminal: Done | Failed) -> bool:
        if isinstance(terminal, Done):
            payload = {k: v for k, v in _fields(terminal).items() if v is not None}
            await self._write(sse.json_frame("done", payload, self.sent))
        else:
            error = {
                "type": terminal.type,
                "message": terminal.message,
                "retryable": terminal.retryable,
            }
            await self._write(sse.json_frame("error", error))
        return True

    async def _write(self, data: bytes) -> None:
        self._write_since = time.monotonic()
        try:
            await self._response.write(data)
        except (ConnectionError, RuntimeError) as exc:
            if self._stalled:
                raise SlowConsumer(f"reader stalled for {self._stall_timeout_s:g}s") from None
            raise ClientGone(str(exc)) from None
        self._write_since = 0.0
        self._last_write = time.monotonic()

    def check_stall(self, now: float) -> None:
        """Called by the hub's watchdog: drop a reader whose write has hung too long.

        One watchdog for all readers costs far less than a timeout around every write.
        """
        if self._write_since and now - self._write_since > self._stall_timeout_s:
            self._stalled = True
            self._abort(SlowConsumer(f"reader stalled for {self._stall_timeout_s:g}s"))

    def _abort(self, error: SlowConsumer) -> None:
        """Tell a stalled client why, without waiting for it, and drop the connection."""
        if self._transport is None:
            return
        frame = sse.json_frame(
            "error", {"type": error.type, "message": error.message, "retryable": True}
        )
        self._transport.write(frame)
        self._transport.abort()


def _fields(terminal: Done) -> dict[str, object]:
    return {field: getattr(terminal, field) for field in terminal.__struct_fields__}
