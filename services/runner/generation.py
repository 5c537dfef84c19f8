"""One generation on a runner: take tokens from the model, stamp them, obey cancel.

The generation is its backend's sink: it stamps each token and pushes it into the
stream's buffer at the runner's :class:`~services.runner.logwriter.LogWriter`, which
numbers, logs and publishes it (first token at once, then per the flush settings).
While the log cannot be written (Redis restarting) tokens wait in that bounded
buffer, and the backend stops pulling from the model once it is full.

A generation is one attempt (``epoch``) at its stream. A continuation takes over at
the seq after the last logged token; an attempt that the stream moved away from is
fenced: it stops, and neither its tokens nor its end reach the log or a reader.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from typing import Any

from nats.aio.client import Client as NATS

from libs.common import metrics, names
from libs.common.boundary import log_with_correlation_id, with_detail_logged
from libs.common.channels import Channel, ToolCallAccumulator, ToolCallDelta
from libs.common.errors import SluiceError, UpstreamError
from libs.common.prompts import fetch_parked
from libs.common.retry import retry_forever
from libs.common.settings import Settings
from libs.common.store import Claim, MetaFields, StreamStore
from libs.common.stream_end import end_stream
from libs.common.wire import (
    Done,
    Failed,
    ReaderLease,
    StatusChange,
    Submit,
    lifecycle_codec,
)
from services.runner.backends import Backend, Outcome, Resume
from services.runner.logwriter import LogWriter, TokenBuffer

log = logging.getLogger(__name__)

RECENT_STAMPS = 4_096
LEASE_HOLD = 1.5  # lease periods a lease holds: one, and slack for a late renewal


class Generation:
    def __init__(
        self,
        submit: Submit,
        backend: Backend,
        store: StreamStore,
        log_writer: LogWriter,
        nc: NATS,
        settings: Settings,
        runner_id: str,
        epoch: int = 0,
    ) -> None:
        self.submit = submit
        self.id = submit.id
        self.epoch = epoch
        self._backend = backend
        self._store = store
        self._log = log_writer
        self._nc = nc
        self._runner_id = runner_id
        self._hold_s = settings.reader_lease_s * LEASE_HOLD
        self._leases: dict[str, float] = {}
        self._buffer = TokenBuffer(self.id, self.fence)
        self._buffer.epoch = epoch
        self._claim = Claim()
        self.fenced = False
        self._recent: deque[int] = deque(maxlen=RECENT_STAMPS)
        self._producer: asyncio.Task[None] | None = None
        self._tool_calls = ToolCallAccumulator()
        self.outcome = Outcome()
        self.count = 0
        self.unread = 0
        self.started_mono = time.monotonic()
        self.started_ns = time.time_ns()
        self.first_token_ns = 0
        self._last_token_ns = 0
        self.read_until = 0.0
        self.cancel_reason: str | None = None
        self._cancel_requested_ns = 0
        self._count_at_cancel = 0

    def lease(self, lease: ReaderLease) -> None:
        """A streamer's readers: the lease holds a while, and ``readers=0`` ends it now.

        Until a lease lapses a reader is not taken for gone, however short the
        stream's ``abandon_after_s``; a streamer whose last reader left says so at once.
        """
        now = time.monotonic()
        self._leases[lease.streamer_id] = now + self._hold_s if lease.readers else now
        self.read_until = max(self._leases.values())
        if lease.readers:
            self.unread = 0  # a reader (back) reads from the log what no one read meanwhile

    def age_s(self) -> float:
        return time.monotonic() - self.started_mono

    def idle_s(self) -> float:
        """Seconds no one has read this stream (counted from its start if no one ever did)."""
        return time.monotonic() - max(self.started_mono, self.read_until)

    def cancel(self, reason: str, requested_ns: int) -> None:
        """Stop the model now; the first reason wins.

        Tokens stamped at or after ``requested_ns`` (when sluice took the cancel in)
        count as generated after it, so the figure includes the cancel's time in flight.
        """
        if self.cancel_reason is None:
            self.cancel_reason = reason
            self._cancel_requested_ns = requested_ns or time.time_ns()
            self._count_at_cancel = self.count - self._emitted_since(self._cancel_requested_ns)
        if self._producer is not None:
            self._producer.cancel()

    def fence(self, epoch: int | None = None) -> None:
        """The stream moved to attempt ``epoch`` (None: the log said so): stop for good."""
        if epoch is not None and epoch <= self.epoch:
            return
        if not self.fenced:
            self.fenced = True
            log.info("stream moved to another runner; stopping", extra={"stream_id": self.id})
        if self._producer is not None:
            self._producer.cancel()

    def _emitted_since(self, ns: int) -> int:
        late = 0
        for stamp in reversed(self._recent):
            if stamp < ns:
                break
            late += 1
        return late

    async def run(self) -> None:
        """The whole life of the generation; never raises."""
        regenerates = self._backend.continuation == "regenerate"
        claim = await retry_forever(
            lambda: self._store.mark_running(self.id, self._runner_id, self.epoch, regenerates),
            "mark running",
            self.id,
        )
        if claim is None:
            return
        self._claim = claim
        self._buffer.numbered = claim.logged
        resume = await self._resume()
        await self._publish_lifecycle(
            StatusChange(
                status="running",
                runner_id=self._runner_id,
                continued_at=claim.logged if resume else None,
            )
        )
        self._producer = asyncio.create_task(self._generate(resume))
        if claim.cancel_reason:
            self.cancel(claim.cancel_reason, claim.cancel_requested_ns)
        if self.fenced:
            self._producer.cancel()
        await asyncio.wait([self._producer])
        stopped_ns = time.time_ns()
        await self._log.drain(self._buffer)
        if not self.fenced:
            await self._finish(self._terminal(stopped_ns))

    async def _resume(self) -> Resume | None:
        """Where a continuation takes over; what it needs of the answer so far comes from
        the log, never memory: the answer text for a prefix, a tool call's fragments."""
        if not self.epoch:
            return None
        logged = self._claim.logged
        mode = self._backend.continuation
        if mode == "regenerate":
            metrics.tokens_recomputed.add(logged)
        if mode != "prefix" and self.submit.tooling is None:
            return Resume(logged)
        batches = await retry_forever(
            lambda: self._store.logged_batches(self.id), "read log", self.id
        )
        text: list[str] = []
        for batch in batches:
            for token, channel in zip(
                batch.texts, batch.channels or itertools.repeat(None), strict=False
            ):
                if channel is None:
                    text.append(token)
                elif isinstance(channel, ToolCallDelta):
                    self._tool_calls.add(channel, token)
        return Resume(logged, "".join(text) if mode == "prefix" else "")

    @property
    def total(self) -> int:
        """Tokens of the whole answer so far: those logged before this attempt, and its own."""
        return self._claim.logged + self.count

    async def _generate(self, resume: Resume | None) -> None:
        self.submit = await retry_forever(
            lambda: fetch_parked(self._store.redis, self.submit), "fetch the prompt", self.id
        )
        await self._backend.generate(self.submit, self.outcome, self, resume)

    def push(self, text: str) -> None:
        """The backend's next token (the :class:`~services.runner.backends.TokenSink` side)."""
        now = time.time_ns()
        if self.count == 0:
            self.first_token_ns = now
            if not self.epoch:
                metrics.runner_ttft.record((now - self.started_ns) / 1e9)
        elif metrics.sampled(self.count - 1):
            metrics.runner_inter_token.record((now - self._last_token_ns) / 1e9)
        self._last_token_ns = now
        self.count += 1
        if time.monotonic() > self.read_until:
            self.unread += 1
        self._recent.append(now)
        self._log.push(self._buffer, text, now)

    def push_channel(self, text: str, channel: Channel) -> None:
        """The backend's next token, of the reasoning or a tool call's arguments."""
        if isinstance(channel, ToolCallDelta):
            self._tool_calls.add(channel, text)
        self.push(text)
        self._log.set_channel(self._buffer, channel)

    def full(self) -> bool:
        return self._buffer.full

    async def space(self) -> None:
        await self._buffer.space.wait()

    def _terminal(self, stopped_ns: int) -> Done | Failed:
        assert self._producer is not None
        ttft_ms = None  # a continuation's first token is not the answer's
        if self.first_token_ns and not self.epoch:
            ttft_ms = (self.first_token_ns - self.started_ns) / 1e6
        duration_ms = (stopped_ns - (self._claim.started_ns or self.started_ns)) / 1e6
        moved = self._moved()
        if self.cancel_reason is not None:  # a call cut short is no call: no tool_calls
            return Done(
                finish_reason=self.cancel_reason,
                tokens=self.total,
                ttft_ms=ttft_ms,
                duration_ms=duration_ms,
                tokens_after_cancel=self.count - self._count_at_cancel,
                cancel_to_stop_ms=max(0.0, (stopped_ns - self._cancel_requested_ns) / 1e6),
                **moved,
            )
        error = self._producer.exception()
        if error is None:
            return Done(
                finish_reason=self.outcome.finish_reason,
                tokens=self.total,
                ttft_ms=ttft_ms,
                duration_ms=duration_ms,
                prompt_tokens=self.outcome.prompt_tokens,
                completion_tokens=self.outcome.completion_tokens,
                reasoning_tokens=self.outcome.reasoning_tokens,
                tool_calls=self._tool_calls.calls() or None,
                **moved,
            )
        if not isinstance(error, SluiceError):
            correlation_id = log_with_correlation_id("backend failed", error)
            error = UpstreamError(f"the model backend failed (correlation id {correlation_id})")
        error = with_detail_logged(error)
        return Failed(
            type=error.type, message=error.message, retryable=error.retryable, tokens=self.total
        )

    def _moved(self) -> dict[str, Any]:
        """For a stream that moved: tokens logged by each attempt, and how many were recomputed."""
        if not self.epoch:
            return {}
        marks = [0, *self._claim.handoffs, self.total]
        attempts = [later - earlier for earlier, later in itertools.pairwise(marks)]
        return {"attempts": attempts, "recomputed": self._claim.recomputed}

    async def _finish(self, terminal: Done | Failed) -> None:
        fields = MetaFields(
            tokens=self.total,
            ttft_ms=getattr(terminal, "ttft_ms", None),
            duration_ms=getattr(terminal, "duration_ms", None),
            tokens_unread=self.unread,
        )
        if isinstance(terminal, Done):
            fields["tokens_after_cancel"] = terminal.tokens_after_cancel
            fields["cancel_to_stop_ms"] = terminal.cancel_to_stop_ms
        tenant = self.submit.tenant
        if await end_stream(self._nc, self._store, self.id, terminal, self.epoch, tenant, **fields):
            self._record(terminal)

    def _record(self, terminal: Done | Failed) -> None:
        duration_s = (time.time_ns() - self.started_ns) / 1e9
        metrics.runner_stream_duration.record(duration_s)
        if self.count and duration_s > 0:
            metrics.runner_tokens_per_s.record(self.count / duration_s)
        if isinstance(terminal, Done):
            self._record_usage(terminal)
        if self.unread:
            metrics.tokens_wasted.add(self.unread, {"kind": "unread"})
        if isinstance(terminal, Done) and terminal.cancel_to_stop_ms is not None:
            metrics.cancel_to_stop.record(terminal.cancel_to_stop_ms / 1000)
            if terminal.tokens_after_cancel:
                metrics.tokens_wasted.add(terminal.tokens_after_cancel, {"kind": "after_cancel"})

    def _record_usage(self, done: Done) -> None:
        usage = {
            "prompt": done.prompt_tokens,
            "completion": done.completion_tokens,
            "reasoning": done.reasoning_tokens,
        }
        for kind, count in usage.items():
            if count:
                metrics.model_usage.add(count, {"model": self.submit.model, "kind": kind})

    async def _publish(self, subject: str, payload: bytes) -> None:
        await retry_forever(lambda: self._nc.publish(subject, payload), "publish", self.id)

    async def _publish_lifecycle(self, change: StatusChange) -> None:
        await self._publish(
            names.stream_subject(self.id, "lifecycle"), lifecycle_codec.encode(change)
        )
