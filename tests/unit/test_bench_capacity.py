"""The capacity search: bisection to the largest stream count within the bound."""

from __future__ import annotations

from typing import Any

import pytest

from libs.tools.bench.capacity import search, within


def result(streams: int, p99_ms: float, delivered: int | None = None) -> dict[str, Any]:
    return {
        "streams": streams,
        "tokens_each": 10,
        "tokens_delivered": streams * 10 if delivered is None else delivered,
        "errors": {},
        "steady_lag_ms": {"n": streams * 5, "p99": p99_ms},
    }


def machine(limit: int, tried: list[int]) -> Any:
    """A fake machine whose p99 is 10 ms up to ``limit`` streams and 100 ms past it."""

    def measure(streams: int) -> dict[str, Any]:
        tried.append(streams)
        return result(streams, 10.0 if streams <= limit else 100.0)

    return measure


@pytest.mark.parametrize("limit", [100, 120, 149, 150, 370, 949, 950, 999])
def test_search_bisects_to_the_step_below_the_limit(limit: int) -> None:
    tried: list[int] = []
    assert search(machine(limit, tried), 100, 1000, 50, bound_ms=25) == limit // 50 * 50
    assert tried[:2] == [100, 1000] and len(tried) <= 7
    assert all(n % 50 == 0 and 100 <= n <= 1000 for n in tried)


def test_search_stops_at_either_end() -> None:
    tried: list[int] = []
    assert search(machine(5000, tried), 100, 1000, 50, bound_ms=25) == 1000
    assert tried == [100, 1000]
    tried.clear()
    assert search(machine(99, tried), 100, 1000, 50, bound_ms=25) == 0
    assert tried == [100]


def test_within_needs_every_token_no_error_and_the_p99() -> None:
    assert within(result(10, 25.0), 25)
    assert not within(result(10, 25.1), 25)
    assert not within(result(10, 1.0, delivered=99), 25)
    failed = result(10, 1.0)
    failed["errors"] = {"slow_consumer": 1}
    assert not within(failed, 25)
    with pytest.raises(SystemExit, match="steady state"):
        within({**result(10, 1.0), "steady_lag_ms": {"n": 0, "p99": float("nan")}}, 25)
