"""Soft state about runners, rebuilt from their heartbeats: who is alive, who has room."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from libs.common.wire import RunnerHeartbeat


@dataclass(slots=True)
class RunnerState:
    runner_id: str
    slots_total: int
    slots_free: int
    models: frozenset[str]
    running: list[str]
    last_seen: float
    reserved: int = 0
    stopping: bool = False
    continuable: frozenset[str] = frozenset()

    @property
    def room(self) -> int:
        return 0 if self.stopping else max(0, self.slots_free - self.reserved)

    @property
    def load(self) -> float:
        return 1 - self.room / self.slots_total if self.slots_total else 1.0


@dataclass
class RunnerRegistry:
    dead_after_s: float
    runners: dict[str, RunnerState] = field(default_factory=dict)

    def beat(self, beat: RunnerHeartbeat) -> None:
        """Take a runner's word for its slots, without counting our own starts twice.

        A start this coordinator has in flight (``reserved``) may already be in the
        beat: the runner took it and beat before its reply was handled here (they
        arrive on different subscriptions). Slots the runner filled since our last view
        are put down to those starts first, or room would be counted one too low for
        each of them and a burst refused early.
        """
        known = self.runners.get(beat.runner_id)
        slots_free = beat.slots_free
        if known is not None and known.reserved:
            slots_free += min(known.reserved, max(0, known.slots_free - beat.slots_free))
        self.runners[beat.runner_id] = RunnerState(
            runner_id=beat.runner_id,
            slots_total=beat.slots_total,
            slots_free=slots_free,
            models=frozenset(beat.models),
            running=beat.running if beat.full or known is None else known.running,
            last_seen=time.monotonic(),
            reserved=known.reserved if known else 0,
            stopping=beat.stopping,
            continuable=frozenset(beat.continuable),
        )

    def choose(
        self, model: str, preferred: str | None = None, continuing: bool = False
    ) -> RunnerState | None:
        """The least-loaded live runner with room for ``model``; ``preferred`` wins if it has room.

        ``continuing``: only runners that can take an answer of ``model`` over mid-way.
        """
        candidates = [
            r
            for r in self.runners.values()
            if model in (r.continuable if continuing else r.models) and r.room > 0
        ]
        if not candidates:
            return None
        for runner in candidates:
            if runner.runner_id == preferred:
                return runner
        return min(candidates, key=lambda r: (r.load, -r.room))

    def reap(self) -> list[RunnerState]:
        """Forget runners whose heartbeats stopped; returns them so their streams can be failed."""
        cutoff = time.monotonic() - self.dead_after_s
        dead = [r for r in self.runners.values() if r.last_seen < cutoff]
        for runner in dead:
            del self.runners[runner.runner_id]
        return dead

    def can_continue(self, model: str, besides: str) -> bool | None:
        """Whether a live runner other than ``besides`` can continue ``model``; None if none lives."""
        others = [r for r in self.runners.values() if r.runner_id != besides and not r.stopping]
        if not others:
            return None
        return any(model in r.continuable for r in others)

    def room(self) -> int:
        """Free slots over every live runner."""
        return sum(r.room for r in self.runners.values())
