"""The coordinator's view of runners: room counted once, whatever order beats and replies take."""

from __future__ import annotations

from libs.common.wire import RunnerHeartbeat
from services.coordinator.registry import RunnerRegistry


def beat(slots_free: int, slots_total: int = 4, full: bool = False) -> RunnerHeartbeat:
    return RunnerHeartbeat(
        runner_id="r", slots_total=slots_total, slots_free=slots_free, models=["sim"], full=full
    )


def test_a_beat_that_already_holds_our_starts_in_flight_does_not_count_them_twice() -> None:
    registry = RunnerRegistry(dead_after_s=3)
    registry.beat(beat(4))
    runner = registry.runners["r"]
    runner.reserved = 2  # two starts sent, replies not handled yet
    assert registry.room() == 2

    registry.beat(beat(2))  # the runner took both and said so before the replies came in

    assert registry.room() == 2
    for _ in range(2):  # the replies: what the coordinator does on each Started
        runner = registry.runners["r"]
        runner.reserved -= 1
        runner.slots_free -= 1
    assert registry.room() == 2
    registry.beat(beat(2))
    assert registry.room() == 2


def test_slots_filled_beyond_our_starts_are_the_runners_to_report() -> None:
    registry = RunnerRegistry(dead_after_s=3)
    registry.beat(beat(4))
    registry.runners["r"].reserved = 1
    registry.beat(beat(0))  # another coordinator filled the rest

    assert registry.room() == 0
    assert registry.runners["r"].slots_free == 1  # ours, whose reply is still to come
