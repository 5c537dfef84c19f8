"""``sluice bench capacity``: the most streams this machine serves within a latency bound.

Runs ``sluice bench latency`` against one suite (or, with ``--floor``, ``sluice bench
floor``: bare sockets, no sluice) at stream counts chosen by bisection between ``--low``
and ``--high``, in steps of ``--step``, and reports the largest count whose steady-state
lag p99 (every stream running, the ramp left out) stays within ``--p99-ms`` with every
token delivered. A throughput target is a point on this curve; a search of the suite
and one of the floor, run one after the other, say how much of the machine's capacity
sluice leaves to its streams. Each count is tried once: on a noisy machine, read the
trials, not just the answer.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from libs.tools.bench import connections, floor, latency, own_suite
from libs.tools.bench.stats import emit

NEEDS_SUITE = False  # the suite search starts its own, once for every trial
PAUSE_S = 2.0  # between trials, so one run's last streams end before the next starts

Measure = Callable[[int], dict[str, Any]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    latency.add_arguments(parser)
    parser.set_defaults(tokens=750, ramp_s=5.0, workers=2)
    parser.add_argument("--p99-ms", type=float, default=25.0, help="the steady lag p99 bound")
    parser.add_argument("--low", type=int, default=100, help="fewest streams to try")
    parser.add_argument("--high", type=int, default=1000, help="most streams to try")
    parser.add_argument("--step", type=int, default=50, help="the answer's resolution")
    parser.add_argument("--floor", action="store_true", help="search bare sockets, not sluice")
    floor.add_through(parser)


def within(result: dict[str, Any], bound_ms: float) -> bool:
    """Every token delivered, no error, and the steady lag p99 within the bound."""
    steady = result["steady_lag_ms"]
    if not steady["n"]:
        raise SystemExit("the runs are too short to have a steady state: raise --tokens")
    delivered_all = result["tokens_delivered"] == result["streams"] * result["tokens_each"]
    return delivered_all and not result["errors"] and steady["p99"] <= bound_ms


def search(measure: Measure, low: int, high: int, step: int, bound_ms: float) -> int:
    """The largest count in [low, high], to ``step``, within the bound (0 if low is not)."""
    if not within(measure(low), bound_ms):
        return 0
    if within(measure(high), bound_ms):
        return high
    good, bad = low, high
    while bad - good > step:
        middle = good + max(step, (bad - good) // 2 // step * step)
        if within(measure(middle), bound_ms):
            good = middle
        else:
            bad = middle
    return good


def run(args: argparse.Namespace, gateway: str | None) -> dict[str, Any]:
    trials: list[dict[str, Any]] = []

    def measure_with(
        mode: Callable[[argparse.Namespace, Any], dict[str, Any]], url: Any
    ) -> Measure:
        def measure(streams: int) -> dict[str, Any]:
            if trials:
                time.sleep(PAUSE_S)
            result = mode(
                argparse.Namespace(**{**vars(args), "streams": streams, "json": None}), url
            )
            trials.append(result)
            return result

        return measure

    bounds = (args.low, max(args.low, args.high), max(1, args.step), args.p99_ms)
    if args.floor:
        best = search(measure_with(floor.run, None), *bounds)
    elif gateway:
        best = search(measure_with(latency.run, gateway), *bounds)
    else:
        with own_suite(connections.SUITE_ENV) as suite:
            best = search(measure_with(latency.run, suite.stack.gateway), *bounds)
    target = "sluice"
    if args.floor:
        hops = "" if args.through == "none" else f" through {args.through}"
        target = f"bare sockets{hops} (no sluice)"
    result = {
        "mode": "capacity",
        "target": "floor" if args.floor else "suite",
        "p99_bound_ms": args.p99_ms,
        "tokens_per_s_each": args.tokens_per_s,
        "capacity_streams": best,
        "trials": [
            {
                "streams": trial["streams"],
                "within": within(trial, args.p99_ms),
                "steady_lag_ms": trial["steady_lag_ms"],
                "steady_machine_busy": trial["steady_machine_busy"],
                "steady_machine_stolen": trial["steady_machine_stolen"],
                "tokens_delivered": trial["tokens_delivered"],
                "errors": trial["errors"],
            }
            for trial in trials
        ],
    }
    emit(
        f"capacity: {target}, streams of {args.tokens_per_s:g} tokens/s, "
        f"steady lag p99 within {args.p99_ms:g} ms",
        [_trial_line(trial) for trial in result["trials"]]
        + [
            f"  at most {best} streams within the bound (searched {args.low}..{args.high} "
            f"in steps of {args.step})"
            if best
            else f"  not even {args.low} streams within the bound"
        ],
        result,
        args.json,
    )
    return result


def _trial_line(trial: dict[str, Any]) -> str:
    lag, busy, stolen = (
        trial["steady_lag_ms"],
        trial["steady_machine_busy"],
        trial["steady_machine_stolen"],
    )
    load = "?" if busy is None else f"{100 * busy:.0f}% busy ({100 * (stolen or 0):.0f}% stolen)"
    return (
        f"  {trial['streams']:>6} streams: steady lag p50 {lag['p50']:8.1f}  p99 {lag['p99']:8.1f} ms,"
        f" machine {load}: {'within' if trial['within'] else 'over'}"
    )
