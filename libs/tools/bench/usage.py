"""What the processes on this machine cost while a benchmark runs, read from ``/proc``.

The suite, its NATS and Redis, and the benchmark's own clients share the same cores,
so every mode reports each one's CPU as a share of one core over the run: that is
where a figure's limit comes from.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_KB


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def cpus_s(pids: dict[str, int]) -> dict[str, float]:
    """:func:`cpu_s` of each named process; one that is gone is left out."""
    used: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            used[name] = cpu_s(pid)
        except OSError:
            continue
    return used


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


@contextmanager
def cpu_shares(pids: dict[str, int]) -> Iterator[dict[str, float]]:
    """Fill the yielded dict, at the end of the block, with each name's share of one core."""
    shares: dict[str, float] = {}
    started = time.monotonic()
    before = cpus_s(pids)
    yield shares
    elapsed = time.monotonic() - started
    for name, seconds in cpus_s(pids).items():
        if name in before:
            shares[name] = (seconds - before[name]) / elapsed


def format_shares(shares: dict[str, float]) -> str:
    ordered = sorted(shares.items(), key=lambda item: -item[1])
    parts = ", ".join(f"{name} {100 * share:.0f}%" for name, share in ordered)
    return f"{parts}; total {100 * sum(shares.values()):.0f}% of one core"


def machine_cpu_s() -> tuple[float, float]:
    """CPU seconds every core together has spent busy since boot, and those the host
    stole (a virtual machine's cores waiting for real ones), from ``/proc/stat``."""
    with open("/proc/stat") as stat:
        ticks = [int(field) for field in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq) / TICKS_PER_S, steal / TICKS_PER_S


class MachineBusy(threading.Thread):
    """How busy the whole machine is between two wall-clock instants (ns), as a share of
    one core: the suite, the clients, the kernel's network work and anything else; and
    how much the host stole, which says how noisy the figures are.

    A thread, so the run it watches never stops to look; ``share`` stays None if the
    window has not closed by the time it is asked for.
    """

    def __init__(self, from_ns: int, until_ns: int) -> None:
        super().__init__(daemon=True)
        self.from_ns, self.until_ns = from_ns, until_ns
        self.share: float | None = None
        self.stolen: float | None = None

    def run(self) -> None:
        time.sleep(max(0.0, (self.from_ns - time.time_ns()) / 1e9))
        (busy, stolen), started = machine_cpu_s(), time.monotonic()
        time.sleep(max(0.0, (self.until_ns - time.time_ns()) / 1e9))
        elapsed = time.monotonic() - started
        busy_after, stolen_after = machine_cpu_s()
        if elapsed > 0:
            self.share = (busy_after - busy) / elapsed
            self.stolen = (stolen_after - stolen) / elapsed


def cpu_ns(pid: int) -> int:
    """User plus system CPU nanoseconds ``pid``'s live threads have run so far.

    From the scheduler's own accounting (``/proc/<pid>/task/*/schedstat``), where
    :func:`cpu_s` counts 10 ms ticks: too coarse for a few µs per operation over a few
    seconds. A thread that has ended is no longer counted.
    """
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                total += int(stat.read().split()[0])
        except FileNotFoundError:
            continue
    return total
