"""The suite's live figures: every service publishes its own, the gateway adds them up.

Each service publishes a :class:`ServiceStats` on ``sluice.stats`` every second: the
cumulative values of its sluice metrics, read from the same registry ``/metrics``
serves, so the hot paths record nothing twice. Cumulative values make a lost message
harmless; the gateway's :class:`Aggregator` turns successive snapshots of each
instance into rates and windowed percentiles, the way Prometheus would, and answers
a :class:`Dashboard` for ``/dashboard`` and ``sluice top``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections import deque
from collections.abc import Iterable

import msgspec
import prometheus_client
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from prometheus_client.metrics_core import Metric

from libs.common import names
from libs.common.tasks import cancel_and_wait
from libs.common.wire import Codec, Wire

log = logging.getLogger(__name__)

COUNTERS: dict[str, str] = {
    "sluice_runner_tokens": "",
    "sluice_streams_submitted": "",
    "sluice_streams_finished": "status",
    "sluice_http_errors": "type",
    "sluice_streamer_disconnects": "reason",
    "sluice_streamer_resumes": "",
    "sluice_tokens_wasted": "kind",
    "sluice_coordinator_rejections": "reason",
    "sluice_runner_lost": "",
    "sluice_continuations": "cause",
    "sluice_tokens_recomputed": "",
}
"""Counter families shown, each with the label it is broken down by (``""``: summed)."""

GAUGES = (
    "sluice_streamer_open_connections",
    "sluice_runner_slots_in_use",
    "sluice_runner_slots_total",
    "sluice_coordinator_queue_depth",
    "sluice_runners_alive",
)
HISTOGRAMS = (
    "sluice_runner_ttft_seconds",
    "sluice_streamer_first_frame_seconds",
    "sluice_streamer_delivery_lag_seconds",
    "sluice_coordinator_queue_wait_seconds",
    "sluice_cancel_to_stop_seconds",
    "sluice_streamer_continuation_stall_seconds",
)
RATE_WINDOW_S = 5.0
PERCENTILE_WINDOW_S = 60.0
STALE_AFTER_S = 5.0


class Buckets(msgspec.Struct, frozen=True, array_like=True):
    """A cumulative histogram: ``counts[i]`` observations at most ``bounds[i]``; last is +Inf."""

    bounds: list[float]
    counts: list[float]


class ServiceStats(Wire, tag="stats", frozen=True):
    """service → gateways, every second: one instance's cumulative figures."""

    service: str
    instance: str
    counters: dict[str, dict[str, float]]
    gauges: dict[str, float]
    histograms: dict[str, Buckets]


stats_codec: Codec[ServiceStats] = Codec(ServiceStats)


class Percentiles(msgspec.Struct, frozen=True):
    """Milliseconds over the last :data:`PERCENTILE_WINDOW_S`; None without observations."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    count: int = 0


class Dashboard(msgspec.Struct, frozen=True):
    """What ``/dashboard/stats`` answers: the whole suite, as live as its last second."""

    instances: dict[str, int]
    streams_running: float
    streams_queued: float
    open_connections: float
    runners_alive: float
    slots_total: float
    tokens_per_s: float
    finished_per_s: float
    ttft_ms: Percentiles
    first_frame_ms: Percentiles
    delivery_ms: Percentiles
    queue_wait_ms: Percentiles
    cancel_to_stop_ms: Percentiles
    continuation_stall_ms: Percentiles
    totals: dict[str, dict[str, float]]
    waste_ratio: float | None
    window_s: float = PERCENTILE_WINDOW_S
    namespace: str = names.DEFAULT_NAMESPACE
    """The one namespace these figures come from (``SLUICE_NAMESPACE``)."""


dashboard_decoder = msgspec.json.Decoder(Dashboard)


def _breakdown(family: Metric, label: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for sample in family.samples:
        if sample.name.endswith("_total"):
            key = sample.labels.get(label, "") if label else ""
            values[key] = values.get(key, 0.0) + sample.value
    return values


def buckets(family: Metric, **labels: str) -> Buckets:
    """A histogram family's buckets, summed over its series, or over those with ``labels``."""
    by_bound: dict[float, float] = {}
    for sample in family.samples:
        if sample.name.endswith("_bucket") and labels.items() <= sample.labels.items():
            bound = float(sample.labels["le"])
            by_bound[bound] = by_bound.get(bound, 0.0) + sample.value
    bounds = sorted(by_bound)
    return Buckets(bounds=bounds, counts=[by_bound[b] for b in bounds])


def snapshot(service: str, instance: str, families: Iterable[Metric]) -> ServiceStats:
    """This process's figures, from the Prometheus view of its OpenTelemetry metrics."""
    counters: dict[str, dict[str, float]] = {}
    gauges: dict[str, float] = {}
    histograms: dict[str, Buckets] = {}
    for family in families:
        if family.name in COUNTERS:
            counters[family.name] = _breakdown(family, COUNTERS[family.name])
        elif family.name in GAUGES:
            gauges[family.name] = sum(sample.value for sample in family.samples)
        elif family.name in HISTOGRAMS:
            histograms[family.name] = buckets(family)
    return ServiceStats(
        service=service,
        instance=instance,
        counters=counters,
        gauges=gauges,
        histograms=histograms,
    )


class StatsPublisher:
    """Publishes this process's :class:`ServiceStats` every ``interval_s``."""

    def __init__(self, nc: NATS, service: str, interval_s: float = 1.0) -> None:
        self._nc = nc
        self._service = service
        self._instance = f"{socket.gethostname()}-{os.getpid()}"
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        await cancel_and_wait([self._task])

    async def _loop(self) -> None:
        while True:
            stats = snapshot(self._service, self._instance, prometheus_client.REGISTRY.collect())
            try:
                await self._nc.publish(names.STATS, stats_codec.encode(stats))
            except Exception as exc:  # a NATS outage must not end the loop
                log.warning("stats publish failed: %r", exc)
            await asyncio.sleep(self._interval_s)


def quantile(q: float, buckets: Buckets) -> float | None:
    """``histogram_quantile``: interpolate within the bucket that holds rank ``q``."""
    if not buckets.counts or buckets.counts[-1] <= 0:
        return None
    rank = q * buckets.counts[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(buckets.bounds, buckets.counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def minus(new: Buckets, old: Buckets | None) -> Buckets:
    """What ``new`` counted since ``old`` (all of it when there was no ``old``)."""
    if old is None or old.bounds != new.bounds:
        return new
    return Buckets(new.bounds, [a - b for a, b in zip(new.counts, old.counts, strict=True)])


def _percentiles(buckets: Buckets | None) -> Percentiles:
    if buckets is None or not buckets.counts or buckets.counts[-1] <= 0:
        return Percentiles()

    def ms(q: float) -> float | None:
        value = quantile(q, buckets)
        return None if value is None else round(value * 1000, 3)

    return Percentiles(ms(0.5), ms(0.95), ms(0.99), int(buckets.counts[-1]))


class _Instance:
    """One publishing process's recent snapshots, newest last, with receive times."""

    def __init__(self) -> None:
        self.history: deque[tuple[float, ServiceStats]] = deque()

    def add(self, at: float, stats: ServiceStats) -> None:
        self.history.append((at, stats))
        while self.history and at - self.history[0][0] > PERCENTILE_WINDOW_S:
            self.history.popleft()

    @property
    def latest(self) -> tuple[float, ServiceStats]:
        return self.history[-1]

    def ago(self, seconds: float) -> tuple[float, ServiceStats]:
        """The newest snapshot at least ``seconds`` older than the latest, else the oldest."""
        newest = self.history[-1][0]
        for at, stats in reversed(self.history):
            if newest - at >= seconds:
                return at, stats
        return self.history[0]


class Aggregator:
    """The gateway's view of every instance's figures, for the dashboard."""

    def __init__(self) -> None:
        self._instances: dict[str, _Instance] = {}

    async def on_message(self, msg: Msg) -> None:
        stats = stats_codec.decode(msg.data)
        self.add(stats, time.monotonic())

    def add(self, stats: ServiceStats, at: float) -> None:
        self._instances.setdefault(stats.instance, _Instance()).add(at, stats)

    def _live(self, now: float) -> list[_Instance]:
        for key in [k for k, i in self._instances.items() if now - i.latest[0] > STALE_AFTER_S]:
            del self._instances[key]
        return list(self._instances.values())

    def dashboard(self, now: float) -> Dashboard:
        live = self._live(now)
        latest = [instance.latest[1] for instance in live]

        def gauge(name: str) -> float:
            return sum(stats.gauges.get(name, 0.0) for stats in latest)

        def rate(name: str) -> float:
            total = 0.0
            for instance in live:
                at, new = instance.latest
                then, old = instance.ago(RATE_WINDOW_S)
                if at > then:
                    total += (_total(new, name) - _total(old, name)) / (at - then)
            return round(total, 3)

        def window(name: str) -> Percentiles:
            merged: Buckets | None = None
            for instance in live:
                new = instance.latest[1].histograms.get(name)
                if new is None:
                    continue
                delta = minus(new, instance.ago(PERCENTILE_WINDOW_S)[1].histograms.get(name))
                merged = delta if merged is None else plus(merged, delta)
            return _percentiles(merged)

        totals: dict[str, dict[str, float]] = {}
        for stats in latest:
            for family, values in stats.counters.items():
                into = totals.setdefault(family, {})
                for key, value in values.items():
                    into[key] = into.get(key, 0.0) + value
        instances: dict[str, int] = {}
        for stats in latest:
            instances[stats.service] = instances.get(stats.service, 0) + 1
        generated = sum(totals.get("sluice_runner_tokens", {}).values())
        wasted = sum(totals.get("sluice_tokens_wasted", {}).values())
        return Dashboard(
            instances=instances,
            streams_running=gauge("sluice_runner_slots_in_use"),
            streams_queued=gauge("sluice_coordinator_queue_depth"),
            open_connections=gauge("sluice_streamer_open_connections"),
            runners_alive=max(
                (s.gauges.get("sluice_runners_alive", 0.0) for s in latest), default=0.0
            ),
            slots_total=gauge("sluice_runner_slots_total"),
            tokens_per_s=rate("sluice_runner_tokens"),
            finished_per_s=rate("sluice_streams_finished"),
            ttft_ms=window("sluice_runner_ttft_seconds"),
            first_frame_ms=window("sluice_streamer_first_frame_seconds"),
            delivery_ms=window("sluice_streamer_delivery_lag_seconds"),
            queue_wait_ms=window("sluice_coordinator_queue_wait_seconds"),
            cancel_to_stop_ms=window("sluice_cancel_to_stop_seconds"),
            totals=totals,
            continuation_stall_ms=window("sluice_streamer_continuation_stall_seconds"),
            waste_ratio=round(wasted / generated, 4) if generated else None,
            namespace=names.NAMESPACE,
        )


def _total(stats: ServiceStats, family: str) -> float:
    return sum(stats.counters.get(family, {}).values())


def plus(a: Buckets, b: Buckets) -> Buckets:
    if a.bounds != b.bounds:
        return a
    return Buckets(a.bounds, [x + y for x, y in zip(a.counts, b.counts, strict=True)])
