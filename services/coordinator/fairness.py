"""Fair shares of the runners' slots between tenants.

Oldest-first placement let one tenant with hundreds of slow, unread streams hold every
slot while another tenant's one stream waited out the queue. Here the next free slot
goes to the tenant running the fewest streams (the oldest waiting stream breaks
ties), and a tenant at its cap on running streams waits however many slots are free.

The counts are this coordinator's: the streams it placed, forgotten when their final
status goes by on ``sluice.stream.*.lifecycle`` or when their runner's full heartbeat
no longer lists them. With several coordinators each applies the cap to its own
placements.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

FORGET_AFTER_S = 5.0
"""A placed stream missing from its runner's full heartbeat for this long has ended."""


class Queued(Protocol):
    @property
    def stream_id(self) -> str: ...

    @property
    def tenant(self) -> str: ...


Q = TypeVar("Q", bound=Queued)


@dataclass(slots=True)
class _Placed:
    tenant: str
    runner_id: str
    placed_mono: float


class TenantShares:
    """Which tenant runs which of this coordinator's placed streams, and who goes next."""

    def __init__(self) -> None:
        self._placed: dict[str, _Placed] = {}
        self._running: Counter[str] = Counter()

    def running(self, tenant: str) -> int:
        return self._running[tenant]

    def placed(self, stream_id: str, tenant: str, runner_id: str) -> None:
        """Count the stream from the moment a start is sent, so an early end is never missed."""
        if stream_id not in self._placed:
            self._placed[stream_id] = _Placed(tenant, runner_id, time.monotonic())
            self._running[tenant] += 1

    def ended(self, stream_id: str) -> None:
        """The stream finished, or its start failed: its slot is its tenant's no longer."""
        placed = self._placed.pop(stream_id, None)
        if placed is not None:
            self._running[placed.tenant] -= 1
            if not self._running[placed.tenant]:
                del self._running[placed.tenant]

    def reconcile(self, runner_id: str, running: Iterable[str]) -> None:
        """Forget streams the runner no longer runs (their end went unheard)."""
        listed = set(running)
        cutoff = time.monotonic() - FORGET_AFTER_S
        gone = [
            stream_id
            for stream_id, placed in self._placed.items()
            if placed.runner_id == runner_id
            and stream_id not in listed
            and placed.placed_mono < cutoff
        ]
        for stream_id in gone:
            self.ended(stream_id)

    def order(self, ready: Iterable[Q], cap: int | None) -> Iterator[Q]:
        """``ready`` (oldest first) in the order they get free slots.

        Each pick goes to the tenant with the fewest running streams, counting the
        ones picked before it; a tenant at ``cap`` (None: no cap) gets no more.
        """
        queues: dict[str, list[Q]] = {}
        for entry in ready:
            queues.setdefault(entry.tenant, []).append(entry)
        share = {tenant: self._running[tenant] for tenant in queues}
        arrival = {tenant: index for index, tenant in enumerate(queues)}
        heads = dict.fromkeys(queues, 0)
        while heads:
            tenant = min(heads, key=lambda t: (share[t], arrival[t]))
            if cap is not None and share[tenant] >= cap:
                del heads[tenant]
                continue
            yield queues[tenant][heads[tenant]]
            share[tenant] += 1
            heads[tenant] += 1
            if heads[tenant] == len(queues[tenant]):
                del heads[tenant]
