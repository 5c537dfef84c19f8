"""Admission, queueing, placement, supersede and debounce, runner liveness.

Submissions arrive on ``sluice.submit`` (queue group: one coordinator answers each).
A stream is admitted (meta written, conversation swapped), answered at once with its
queue position, then placed on the least-loaded runner with room when its debounce
has passed. Cancels are heard by every coordinator, so whichever holds a waiting
stream ends it without it ever reaching a model. The running streams of a runner
that stops or dies go back to the front of the queue, to continue on another runner
(:mod:`services.coordinator.failover`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from opentelemetry.trace import SpanKind

from libs.common import metrics, names, tracing
from libs.common.api import FINAL_STATUSES
from libs.common.boundary import classify
from libs.common.retry import TRANSIENT, retry_forever
from libs.common.settings import Settings
from libs.common.store import Admission, StreamMeta, StreamStore
from libs.common.stream_end import end_stream, request_cancel
from libs.common.tasks import cancel_and_wait
from libs.common.wire import (
    Accepted,
    Cancel,
    Done,
    Failed,
    HandoffReply,
    Rejected,
    Start,
    Started,
    StatusChange,
    Submit,
    control_codec,
    handoff_codec,
    handoff_reply_codec,
    heartbeat_codec,
    lifecycle_codec,
    start_codec,
    start_reply_codec,
    submit_codec,
    submit_json_encode,
    submit_reply_codec,
)
from services.coordinator.failover import Move, begin_move, held_by, request_of
from services.coordinator.fairness import TenantShares
from services.coordinator.registry import RunnerRegistry, RunnerState

log = logging.getLogger(__name__)

LIVENESS_INTERVAL_S = 0.5
START_TIMEOUT_S = 2.0
POSITIONS_ANNOUNCED = 100


AFFINITY_MAX = 100_000
"""Conversations whose last runner is remembered (least recently used forgotten first)."""


@dataclass(slots=True)
class Waiting:
    submit: Submit
    admitted_mono: float
    ready: bool = False
    traceparent: str = ""
    move: Move | None = None

    @property
    def stream_id(self) -> str:
        return self.submit.id

    @property
    def tenant(self) -> str:
        return self.submit.tenant


class Coordinator:
    def __init__(self, settings: Settings, nc: NATS, store: StreamStore) -> None:
        self.settings = settings
        self._nc = nc
        self._store = store
        self.registry = RunnerRegistry(settings.runner_dead_after_s)
        self.waiting: OrderedDict[str, Waiting] = OrderedDict()
        self._affinity: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.shares = TenantShares()
        self._positions: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._liveness: asyncio.Task[None] | None = None
        self._runner_count = 0

    async def start(self) -> None:
        await self._nc.subscribe(names.SUBMIT, queue=names.COORDINATOR_QUEUE, cb=self._on_submit)
        await self._nc.subscribe(names.RUNNER_HEARTBEAT, cb=self._on_heartbeat)
        await self._nc.subscribe(names.ALL_CONTROL, cb=self._on_control)
        await self._nc.subscribe(names.ALL_LIFECYCLE, cb=self._on_lifecycle)
        await self._nc.subscribe(
            names.RUNNER_HANDOFF, queue=names.COORDINATOR_QUEUE, cb=self._on_handoff
        )
        self._liveness = asyncio.create_task(self._liveness_loop())
        await self._nc.publish(names.RUNNER_ANNOUNCE, b"")

    async def stop(self) -> None:
        await cancel_and_wait([self._liveness, *self._tasks])

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("coordinator task failed", exc_info=task.exception())

    @property
    def queued(self) -> int:
        return sum(1 for entry in self.waiting.values() if entry.ready)

    async def _on_submit(self, msg: Msg) -> None:
        submit = submit_codec.decode(msg.data)
        context = tracing.parent(msg.headers)
        self._spawn(tracing.traced(self._admit(msg, submit), "admit", submit.id, context))

    async def _admit(self, msg: Msg, submit: Submit) -> None:
        """Admit a submission unless the queue is full or its tenant over its limit.

        The queue is checked and the place in ``waiting`` reserved with no await
        between, and the tenant's place is taken and counted in one script, so a burst
        of submissions cannot slip past either bound. The reservation counts toward the
        backlog at once but is not ``ready`` (so never placed) before its meta exists.
        """
        backlog = self._backlog()
        if backlog >= self.settings.queue_max:
            await self._refuse(msg, self._overloaded(backlog))
            return
        self.waiting[submit.id] = Waiting(
            submit, time.monotonic(), traceparent=tracing.traceparent()
        )
        try:
            admission = await self._record(submit)
        except Exception:
            self.waiting.pop(submit.id, None)
            raise
        if isinstance(admission, Rejected):
            self.waiting.pop(submit.id, None)
            await self._refuse(msg, admission)
            return
        metrics.streams_submitted.add(1, {"model": submit.model})
        position = backlog + 1 if backlog >= 0 else None
        await msg.respond(submit_reply_codec.encode(Accepted(status="queued", position=position)))
        previous = admission.previous
        if submit.supersede and previous and previous != submit.id:
            await self._supersede(previous, submit.tenant)
        if submit.debounce_ms:
            await asyncio.sleep(submit.debounce_ms / 1000)
        entry = self.waiting.get(submit.id)
        if entry is not None:
            entry.ready = True
            metrics.coordinator_queue_depth.add(1)
            self._pump()

    async def _supersede(self, previous: str, tenant: str) -> None:
        """Cancel the conversation's previous stream, if it is this tenant's own."""
        meta = await self._store.meta(previous)
        if meta is None or meta.tenant != tenant:
            log.warning("not superseding another tenant's stream", extra={"stream_id": previous})
            return
        await request_cancel(self._nc, self._store, previous, "superseded")

    async def _refuse(self, msg: Msg, verdict: Rejected) -> None:
        metrics.coordinator_rejections.add(1, {"reason": verdict.type})
        await msg.respond(submit_reply_codec.encode(verdict))

    def _overloaded(self, backlog: int) -> Rejected:
        return Rejected(
            type="overloaded",
            message=f"all runners busy and {backlog} streams queued",
            retry_after_s=max(1.0, backlog / max(1, self._total_slots())),
        )

    def _backlog(self) -> int:
        """Admitted streams that no free slot can take now: the queue, burst included."""
        return len(self.waiting) - self.registry.room()

    def _total_slots(self) -> int:
        return sum(r.slots_total for r in self.registry.runners.values())

    async def _record(self, submit: Submit) -> Admission | Rejected:
        """Take the tenant's place, write the meta and swap the conversation: one round trip.

        Redis unreachable is a refusal the client can retry, not a stream left unanswered.
        """
        meta = StreamMeta(
            status="queued",
            tenant=submit.tenant,
            model=submit.model,
            conversation_id=submit.conversation_id or "",
            created_ns=submit.created_ns,
            abandon_after_s=submit.abandon_after_s,
            traceparent=tracing.traceparent(),
            submit=submit_json_encode(submit).decode(),
        )
        limit = self.settings.tenant_max_streams
        try:
            admission = await self._store.admit(submit.id, meta, limit)
        except TRANSIENT as exc:
            error = classify(exc)
            return Rejected(
                type=error.type, message=error.message, retry_after_s=error.retry_after_s
            )
        if not admission.admitted:
            return Rejected(
                type="rate_limited",
                message=f"tenant has {admission.active} active streams (limit {limit})",
                retry_after_s=1,
            )
        return admission

    def _tenant_cap(self) -> int | None:
        """Running streams a tenant may hold: ``SLUICE_TENANT_MAX_RUNNING``, or by default
        half the live slots when there are tenants to share them (API keys on)."""
        if self.settings.tenant_max_running:
            return self.settings.tenant_max_running
        return max(1, self._total_slots() // 2) if self.settings.auth_enabled else None

    def _pump(self) -> None:
        """Place ready streams while some runner has room: answers moving off a lost or
        stopping runner first (they were running already), then new ones in fair order
        between tenants."""
        ready = [entry for entry in self.waiting.values() if entry.ready]
        moving = [entry for entry in ready if entry.move is not None]
        fresh = (entry for entry in ready if entry.move is None)
        for entry in itertools.chain(moving, self.shares.order(fresh, self._tenant_cap())):
            stream_id, submit = entry.stream_id, entry.submit
            preferred = self._affinity.get((submit.tenant, submit.conversation_id or ""))
            runner = self.registry.choose(submit.model, preferred, entry.move is not None)
            if runner is None:
                break
            runner.reserved += 1
            self.shares.placed(stream_id, submit.tenant, runner.runner_id)
            del self.waiting[stream_id]
            metrics.coordinator_queue_depth.add(-1)
            context = tracing.parent_of(entry.traceparent)
            placing = self._place(entry, runner.runner_id)
            self._spawn(tracing.traced(placing, "place", stream_id, context, SpanKind.CLIENT))
        self._announce_positions()

    async def _place(self, entry: Waiting, runner_id: str) -> None:
        submit = entry.submit
        queued_s = time.monotonic() - entry.admitted_mono
        epoch = 0
        if entry.move is not None:
            moved = await begin_move(self._nc, self._store, submit.id, entry.move, runner_id)
            if moved is None:  # it ended meanwhile, or another coordinator moved it
                self._release(runner_id)
                return
            epoch = moved
            entry.move = Move(runner_id, entry.move.cause)
        start = Start(submit=submit, queued_ms=queued_s * 1000, epoch=epoch)
        request = start_codec.encode(start)
        try:
            reply = await self._nc.request(
                names.runner_start(runner_id),
                request,
                timeout=START_TIMEOUT_S,
                headers=tracing.headers(),
            )
            verdict = start_reply_codec.decode(reply.data)
        except (NatsTimeout, NoRespondersError) as exc:
            verdict = None
            log.warning("runner %s did not take the stream: %r", runner_id, exc)
        runner = self._release(runner_id)
        if isinstance(verdict, Started):
            if runner is not None:
                runner.slots_free = max(0, runner.slots_free - 1)
                runner.running.append(submit.id)
            metrics.coordinator_queue_wait.record(queued_s)
            if submit.conversation_id:
                self._remember(submit.tenant, submit.conversation_id, runner_id)
            return
        self.shares.ended(submit.id)
        if runner is not None:
            runner.slots_free = 0
        entry.ready = True
        self.waiting[submit.id] = entry
        self.waiting.move_to_end(submit.id, last=False)
        metrics.coordinator_queue_depth.add(1)

    def _remember(self, tenant: str, conversation_id: str, runner_id: str) -> None:
        """The conversation's runner, for its next stream; bounded, least recent out first."""
        key = (tenant, conversation_id)
        self._affinity[key] = runner_id
        self._affinity.move_to_end(key)
        if len(self._affinity) > AFFINITY_MAX:
            self._affinity.popitem(last=False)

    def _release(self, runner_id: str) -> RunnerState | None:
        """A start to ``runner_id`` was answered (or dropped): its slot is no longer reserved."""
        runner = self.registry.runners.get(runner_id)
        if runner is not None:
            runner.reserved = max(0, runner.reserved - 1)
        return runner

    def _announce_positions(self, again: bool = False) -> None:
        """Publish queue positions that changed; ``again`` repeats them all.

        Repeating them every liveness tick gives a reader that connected after the last
        change its position within half a second (readers drop unchanged status frames).
        """
        position = 0
        for stream_id, entry in self.waiting.items():
            if not entry.ready:
                continue
            position += 1
            if position > POSITIONS_ANNOUNCED:
                break
            if again or self._positions.get(stream_id) != position:
                self._positions[stream_id] = position
                change = StatusChange(status="queued", position=position)
                self._spawn(
                    self._nc.publish(
                        names.stream_subject(stream_id, "lifecycle"), lifecycle_codec.encode(change)
                    )
                )
        for stream_id in [s for s in self._positions if s not in self.waiting]:
            del self._positions[stream_id]

    async def _on_heartbeat(self, msg: Msg) -> None:
        beat = heartbeat_codec.decode(msg.data)
        self.registry.beat(beat)
        if beat.full:
            self.shares.reconcile(beat.runner_id, beat.running)
        self._count_runners()
        if self.queued:
            self._pump()

    async def _on_lifecycle(self, msg: Msg) -> None:
        """A stream this coordinator placed ended: its tenant may run another."""
        if lifecycle_codec.decode(msg.data).status in FINAL_STATUSES:
            self.shares.ended(names.stream_id_of(msg.subject))
            if self.queued:
                self._pump()

    async def _on_control(self, msg: Msg) -> None:
        message = control_codec.decode(msg.data)
        if not isinstance(message, Cancel):
            return
        stream_id = names.stream_id_of(msg.subject)
        entry = self.waiting.pop(stream_id, None)
        if entry is None:
            return
        if entry.ready:
            metrics.coordinator_queue_depth.add(-1)
        self._spawn(self._end_waiting(stream_id, message.reason, entry.move is not None))
        self._announce_positions()

    async def _end_waiting(self, stream_id: str, reason: str, moved: bool) -> None:
        """End a stream cancelled in the queue; one waiting to move keeps what it logged."""
        tokens = 0
        if moved:
            tokens = await retry_forever(
                lambda: self._store.logged_tokens(stream_id), "read log", stream_id
            )
        done = Done(finish_reason=reason, tokens=tokens, tokens_after_cancel=0)
        await end_stream(self._nc, self._store, stream_id, done, tokens=tokens)

    async def _on_handoff(self, msg: Msg) -> None:
        """A stopping runner's streams: move those another runner can continue now."""
        handoff = handoff_codec.decode(msg.data)
        moved = [
            stream_id
            for stream_id in handoff.streams
            if await self._rescue(stream_id, handoff.runner_id, "handoff")
        ]
        await msg.respond(handoff_reply_codec.encode(HandoffReply(moved=moved)))

    async def _rescue(self, stream_id: str, runner_id: str, cause: str) -> bool:
        """Queue ``runner_id``'s stream, first in line, to continue on another runner.

        False when it cannot: no live runner continues its model (or, for a handoff,
        no other runner lives at all), or its request was not recorded. A stream that
        ended or moved meanwhile needs nothing: True.
        """
        meta = await retry_forever(lambda: self._store.meta(stream_id), "read meta", stream_id)
        if meta is None or not held_by(meta, runner_id) or stream_id in self.waiting:
            return True
        submit = request_of(meta)
        capable = self.registry.can_continue(meta.model, runner_id)
        if submit is None or capable is False or (capable is None and cause == "handoff"):
            return False
        entry = Waiting(submit, time.monotonic(), ready=True, move=Move(runner_id, cause))
        self.waiting[stream_id] = entry
        self.waiting.move_to_end(stream_id, last=False)
        metrics.coordinator_queue_depth.add(1)
        metrics.continuations.add(1, {"cause": cause})
        self._pump()
        return True

    async def _rescue_or_fail(self, stream_id: str, runner_id: str) -> None:
        if not await self._rescue(stream_id, runner_id, "lost"):
            await self._fail_lost(stream_id, runner_id)

    async def _liveness_loop(self) -> None:
        """Move the streams of runners whose heartbeats stopped to live ones (or fail them).

        While this coordinator is cut off from NATS no heartbeat can reach it, so
        silence says nothing about the runners: their clocks restart instead.
        """
        while True:
            await asyncio.sleep(LIVENESS_INTERVAL_S)
            if not self._nc.is_connected:
                for state in self.registry.runners.values():
                    state.last_seen = time.monotonic()
            for runner in self.registry.reap():
                log.warning("runner lost", extra={"runner_id": runner.runner_id})
                for stream_id in runner.running:
                    self._spawn(self._rescue_or_fail(stream_id, runner.runner_id))
            self._count_runners()
            self._expire_waiting()
            self._announce_positions(again=True)

    async def _fail_lost(self, stream_id: str, runner_id: str) -> None:
        """End a lost runner's stream no other runner can continue; Redis being down too
        only delays it (retried)."""
        meta = await retry_forever(lambda: self._store.meta(stream_id), "read meta", stream_id)
        if not held_by(meta, runner_id):
            return
        logged = await retry_forever(
            lambda: self._store.logged_tokens(stream_id), "read log", stream_id
        )
        failed = Failed(
            type="runner_lost",
            message=(
                f"runner {runner_id} stopped answering and no runner can continue this "
                "answer; resume to read what was generated"
            ),
            retryable=True,
            tokens=logged,
        )
        if await end_stream(self._nc, self._store, stream_id, failed, tokens=failed.tokens):
            metrics.runner_lost.add(1)

    def _expire_waiting(self) -> None:
        """Fail streams that waited in the queue longer than ``SLUICE_QUEUE_WAIT_S``."""
        cutoff = time.monotonic() - self.settings.queue_wait_s
        for stream_id, entry in list(self.waiting.items()):
            if entry.ready and entry.admitted_mono < cutoff:
                del self.waiting[stream_id]
                metrics.coordinator_queue_depth.add(-1)
                failed = Failed(
                    type="runner_lost" if entry.move else "overloaded",
                    message=f"no runner free within {self.settings.queue_wait_s:g}s",
                    retryable=True,
                )
                self._spawn(end_stream(self._nc, self._store, stream_id, failed))

    def _count_runners(self) -> None:
        alive = len(self.registry.runners)
        if alive != self._runner_count:  # a heartbeat a few ms apart: record changes only
            metrics.runners_alive.add(alive - self._runner_count)
            self._runner_count = alive
