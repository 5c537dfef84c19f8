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


def runner(runner_id: str, continuable: list[str], stopping: bool = False) -> RunnerHeartbeat:
    return RunnerHeartbeat(
        runner_id=runner_id,
        slots_total=4,
        slots_free=4,
        models=["sim", "llm"],
        continuable=continuable,
        stopping=stopping,
    )


def test_a_continuation_goes_only_to_a_runner_that_can_continue_its_model() -> None:
    registry = RunnerRegistry(dead_after_s=3)
    registry.beat(runner("a", ["sim"]))
    registry.beat(runner("b", ["sim", "llm"]))

    chosen = registry.choose("llm", preferred="a", continuing=True)
    assert chosen is not None and chosen.runner_id == "b"
    first = registry.choose("llm", preferred="a")
    assert first is not None and first.runner_id == "a", "a fresh start may go anywhere"


def test_whether_an_answer_can_move_off_a_runner() -> None:
    registry = RunnerRegistry(dead_after_s=3)
    registry.beat(runner("a", ["sim"]))
    assert registry.can_continue("sim", besides="a") is None, "no other runner lives"
    registry.beat(runner("b", [], stopping=True))
    assert registry.can_continue("sim", besides="a") is None, "a stopping runner takes nothing"
    registry.beat(runner("c", ["sim"]))
    assert registry.can_continue("sim", besides="a") is True
    assert registry.can_continue("llm", besides="a") is False
