"""The runner: slots, start requests, control and reader leases, heartbeats, abandon.

Start requests arrive on ``sluice.runner.<rid>.start``; each accepted stream gets two
direct subscriptions of its own (control and readers) for as long as it runs, so
cancel and lease traffic reaches only the runner that holds the stream, and is
handled inside the NATS read loop without a task switch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from libs.common import best_effort, metrics, names, tracing
from libs.common.direct_nats import DirectNATS
from libs.common.settings import Settings
from libs.common.store import StreamStore
from libs.common.tasks import cancel_and_wait
from libs.common.wire import (
    Cancel,
    Refused,
    RunnerHeartbeat,
    Started,
    control_codec,
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
        self._beat_pending = False

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
        """Take no new work, let running generations finish for ``drain_s``, then fail them."""
        self.stopping = True
        await self.heartbeat()
        running = [task for task in self._tasks if not task.done()]
        if running:
            await asyncio.wait(running, timeout=drain_s)
        await cancel_and_wait([*self._loops, *self._tasks])
        await self._log.stop()

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
        if submit.id in self.generations:
            await msg.respond(start_reply_codec.encode(Started(runner_id=self.id)))
            return
        generation = Generation(
            submit, backend, self._store, self._log, self._nc, self.settings, self.id
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
        """Tell coordinators soon that slots were taken or freed, once per burst of changes."""
        if self._beat_pending:
            return
        self._beat_pending = True
        asyncio.get_running_loop().call_later(SLOT_BEAT_DELAY_S, self._slot_beat)

    def _slot_beat(self) -> None:
        self._beat_pending = False
        task = asyncio.create_task(self.heartbeat(full=False))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def heartbeat(self, full: bool = True) -> None:
        beat = RunnerHeartbeat(
            runner_id=self.id,
            slots_total=self.settings.runner_slots,
            slots_free=0 if self.stopping else self.slots_free,
            models=sorted(self._backends),
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


def _on_lease(generation: Generation, subject: str, data: bytes) -> None:
    generation.lease(lease_codec.decode(data))
