"""The runner: slots, start requests, control and reader leases, heartbeats, abandon.

Start requests arrive on ``sluice.runner.<rid>.start``; each accepted stream gets two
direct subscriptions of its own (control and readers) for as long as it runs, so
cancel and lease traffic reaches only the runner that holds the stream, and is
handled inside the NATS read loop without a task switch.

A runner told to stop hands its generations to the coordinators, which continue them
on other runners; each ends here when the coordinator fences it, so the runner exits
in moments however long its answers are. What no one can take is drained as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from libs.common import best_effort, metrics, names, tracing
from libs.common.direct_nats import DirectNATS
from libs.common.settings import Settings
from libs.common.store import StreamStore
from libs.common.tasks import cancel_and_wait
from libs.common.wire import (
    Cancel,
    Fence,
    Handoff,
    Refused,
    RunnerHeartbeat,
    Started,
    control_codec,
    handoff_codec,
    handoff_reply_codec,
    heartbeat_codec,
    lease_codec,
    start_codec,
    start_reply_codec,
)
from services.runner.backends import Backend
from services.runner.generation import Generation
from services.runner.logwriter import LogWriter

log = logging.getLogger(__name__)

WATCHDOG_INTERVAL_S = 0.25
SLOT_BEAT_DELAY_S = 0.005
SLOT_BEAT_LAZY_S = 0.05
HANDOFF_TIMEOUT_S = 2.0


class Runner:
    def __init__(
        self, settings: Settings, nc: DirectNATS, store: StreamStore, backends: dict[str, Backend]
    ) -> None:
        self.settings = settings
        self.id = settings.effective_runner_id
        self._nc = nc
        self._store = store
        self._backends = backends
        self._log = LogWriter(
            store, nc, settings.runner_flush_ms / 1000, settings.runner_flush_tokens
        )
        self.generations: dict[str, Generation] = {}
        self._subscriptions: dict[str, list[Subscription]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self.stopping = False
        self._beat: asyncio.TimerHandle | None = None
        self._announced_free = 0  # slots_free in the last heartbeat
        self._started_since_beat = 0

    @property
    def slots_free(self) -> int:
        return max(0, self.settings.runner_slots - len(self.generations))

    async def start(self) -> None:
        self._log.start()
        await self._nc.subscribe(names.runner_start(self.id), cb=self._on_start)
        await self._nc.subscribe(names.RUNNER_ANNOUNCE, cb=self._on_announce)
        metrics.runner_slots_total.add(self.settings.runner_slots)
        self._loops = [
            asyncio.create_task(self._heartbeat_loop()),
            asyncio.create_task(self._watchdog_loop()),
        ]
        await self.heartbeat()

    async def stop(self, drain_s: float) -> None:
        """Take no new work, hand running generations over, let the rest finish for
        ``drain_s``, then stop them (the coordinators continue them once this runner is
        declared lost)."""
        self.stopping = True
        await self.heartbeat()
        await self._hand_off()
        running = [task for task in self._tasks if not task.done()]
        if running:
            await asyncio.wait(running, timeout=drain_s)
        await cancel_and_wait([*self._loops, *self._tasks])
        await self._log.stop()

    async def _hand_off(self) -> None:
        """Ask a coordinator to continue every running generation on another runner.

        The generations go on until each is fenced, the moment its continuation is
        placed, so readers wait only for the new runner's first token.
        """
        if not self.generations:
            return
        request = handoff_codec.encode(Handoff(runner_id=self.id, streams=list(self.generations)))
        try:
            reply = await self._nc.request(names.RUNNER_HANDOFF, request, timeout=HANDOFF_TIMEOUT_S)
        except (NatsTimeout, NoRespondersError) as exc:
            log.warning("no coordinator took the handoff (%r); draining", exc)
            return
        moved = handoff_reply_codec.decode(reply.data).moved
        log.info("handed %d of %d generations over", len(moved), len(self.generations))

    async def _on_announce(self, msg: Msg) -> None:
        """A coordinator just started: tell it about this runner now, not in a second."""
        await self.heartbeat()

    async def _on_start(self, msg: Msg) -> None:
        request = start_codec.decode(msg.data)
        submit = request.submit
        backend = self._backends.get(submit.model)
        if self.stopping or backend is None or not self.slots_free:
            reason = "stopping" if self.stopping else "no slot" if backend else "unknown model"
            await msg.respond(start_reply_codec.encode(Refused(reason=reason)))
            return
        held = self.generations.get(submit.id)
        if held is not None:
            if held.epoch == request.epoch:
                await msg.respond(start_reply_codec.encode(Started(runner_id=self.id)))
                return
            held.fence(request.epoch)  # its slot frees once it stops: take it then, elsewhere
            await msg.respond(start_reply_codec.encode(Refused(reason="older attempt stopping")))
            return
        generation = Generation(
            submit, backend, self._store, self._log, self._nc, self.settings, self.id, request.epoch
        )
        self.generations[submit.id] = generation
        metrics.runner_slots_in_use.add(1)
        self._subscriptions[submit.id] = [
            await self._nc.subscribe_direct(
                names.stream_subject(submit.id, "control"), partial(_on_control, generation)
            ),
            await self._nc.subscribe_direct(
                names.stream_subject(submit.id, "readers"), partial(_on_lease, generation)
            ),
        ]
        await msg.respond(start_reply_codec.encode(Started(runner_id=self.id)))
        self._started_since_beat += 1
        context = tracing.parent(msg.headers)
        task = asyncio.create_task(
            tracing.traced(self._run(generation), "generate", submit.id, context)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._changed()

    async def _run(self, generation: Generation) -> None:
        try:
            await generation.run()
        except Exception:
            log.exception("generation crashed", extra={"stream_id": generation.id})
        finally:
            del self.generations[generation.id]
            metrics.runner_slots_in_use.add(-1)
            for subscription in self._subscriptions.pop(generation.id, []):
                await best_effort.unsubscribe(subscription, generation.id)
            self._changed()

    def _changed(self) -> None:
        """Tell coordinators that slots were taken or freed, once per burst of changes.

        Soon (``SLOT_BEAT_DELAY_S``) when their view of this runner's free slots (the
        last heartbeat's, less the starts since) is low, as streams may wait for one;
        otherwise lazily (``SLOT_BEAT_LAZY_S``): a beat costs the runner, NATS and every
        coordinator CPU, and a burst of short streams sent dozens a second.
        """
        viewed_free = self._announced_free - self._started_since_beat
        low = viewed_free <= self.settings.runner_slots // 8
        delay = SLOT_BEAT_DELAY_S if low else SLOT_BEAT_LAZY_S
        loop = asyncio.get_running_loop()
        if self._beat is not None:
            if self._beat.when() <= loop.time() + delay:
                return
            self._beat.cancel()
        self._beat = loop.call_later(delay, self._slot_beat)

    def _slot_beat(self) -> None:
        self._beat = None
        task = asyncio.create_task(self.heartbeat(full=False))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def heartbeat(self, full: bool = True) -> None:
        self._announced_free = 0 if self.stopping else self.slots_free
        self._started_since_beat = 0
        beat = RunnerHeartbeat(
            runner_id=self.id,
            slots_total=self.settings.runner_slots,
            slots_free=self._announced_free,
            models=sorted(self._backends),
            continuable=sorted(n for n, b in self._backends.items() if b.continuation != "none"),
            running=list(self.generations) if full else [],
            stopping=self.stopping,
            full=full,
        )
        await best_effort.publish(self._nc, names.RUNNER_HEARTBEAT, heartbeat_codec.encode(beat))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.runner_heartbeat_s)
            await self.heartbeat()

    async def _watchdog_loop(self) -> None:
        """Cancel generations no one has read for their ``abandon_after_s``, and end those
        that ran ``SLUICE_MAX_STREAM_S`` (finish reason ``length``): no slot is held forever."""
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            for generation in list(self.generations.values()):
                limit = generation.submit.abandon_after_s
                if limit is not None and generation.idle_s() > limit:
                    generation.cancel("abandoned", time.time_ns())
                elif generation.age_s() > self.settings.max_stream_s:
                    generation.cancel("length", time.time_ns())


def _on_control(generation: Generation, subject: str, data: bytes) -> None:
    message = control_codec.decode(data)
    if isinstance(message, Cancel):
        generation.cancel(message.reason, message.requested_ns)
    elif isinstance(message, Fence):
        generation.fence(message.epoch)


def _on_lease(generation: Generation, subject: str, data: bytes) -> None:
    generation.lease(lease_codec.decode(data))
