"""The dashboard's percentiles, read from histogram buckets, agree with the exact ones."""

from __future__ import annotations

import bisect
import random

import pytest

from libs.common.metrics import HISTOGRAM_BUCKETS
from libs.common.stats import Buckets, quantile
from libs.tools.bench.stats import percentile

BUCKET_WIDTH = 2 ** (1 / 8) - 1
DASHBOARD = (
    "sluice.runner.ttft",
    "sluice.streamer.first_frame",
    "sluice.streamer.delivery_lag",
    "sluice.coordinator.queue_wait",
    "sluice.cancel_to_stop",
)


def bucketed(values: list[float], bounds: tuple[float, ...]) -> Buckets:
    """Cumulative counts per bound, +Inf last, as Prometheus exposes a histogram."""
    counts = [0] * (len(bounds) + 1)
    for value in values:
        counts[bisect.bisect_left(bounds, value)] += 1
    cumulative, total = [], 0
    for count in counts:
        total += count
        cumulative.append(float(total))
    return Buckets(bounds=[*bounds, float("inf")], counts=cumulative)


SAMPLES = {
    "ttft around 303 ms": lambda r: r.gauss(0.303, 0.004),
    "queue waits of 1 to 3 ms": lambda r: r.uniform(0.001, 0.003),
    "delivery lag, long-tailed": lambda r: r.lognormvariate(-6.0, 0.8),
    "cancel to stop around 20 ms": lambda r: r.gauss(0.020, 0.003),
}


@pytest.mark.parametrize("name", DASHBOARD)
@pytest.mark.parametrize("shape", list(SAMPLES))
def test_bucket_percentiles_are_within_one_bucket_of_the_exact_ones(name: str, shape: str) -> None:
    """A bucket spans 2^(1/8) - 1 = 9% of its value: the estimate is never further off."""
    rng = random.Random(7)
    values = [SAMPLES[shape](rng) for _ in range(2000)]
    buckets = bucketed(values, HISTOGRAM_BUCKETS[name])
    for q in (0.5, 0.95, 0.99):
        exact = percentile(values, q * 100)
        estimate = quantile(q, buckets)
        assert estimate is not None
        assert abs(estimate - exact) <= BUCKET_WIDTH * exact, (q, exact, estimate)


def test_a_queue_wait_of_two_milliseconds_reads_as_about_two() -> None:
    """Coarse buckets (first bound 100 ms) showed every short wait as exactly 50/95/99 ms."""
    values = [0.002] * 100
    buckets = bucketed(values, HISTOGRAM_BUCKETS["sluice.coordinator.queue_wait"])
    for q in (0.5, 0.95, 0.99):
        estimate = quantile(q, buckets)
        assert estimate is not None and 0.0018 <= estimate <= 0.0022
