"""The catalogue of sluice's instruments: every service records into these.

Instruments are created on the global (proxy) meter at import, so they bind to
whatever provider :func:`libs.common.telemetry.setup_telemetry` installs later.
Prometheus names follow: ``sluice.runner.ttft`` in seconds is ``sluice_runner_ttft_seconds``.
"""

from __future__ import annotations

from opentelemetry import metrics


def geometric_buckets(low: float, high: float, per_doubling: int) -> tuple[float, ...]:
    """Bounds from ``low`` up to at least ``high``, ``per_doubling`` of them per factor of two.

    A percentile read from buckets is interpolated inside one bucket, so its error is
    bounded by the bucket's width: with 8 per doubling a bucket spans 9% of its value
    and a percentile lands within a few % of the exact one. Coarse decade-style bounds
    (0.1, 0.25, 0.5 s) showed a 303 ms TTFT as 375 ms, and every queue wait under
    100 ms as exactly 50/95/99 ms.
    """
    bounds = [low]
    while bounds[-1] < high:
        bounds.append(float(f"{low * 2 ** (len(bounds) / per_doubling):.4g}"))
    return tuple(bounds)


LATENCY_BUCKETS_S = geometric_buckets(0.0005, 60.0, 8)
HOP_BUCKETS_S = geometric_buckets(0.00002, 10.0, 8)
"""From 20 µs: a hop inside one process takes tens of µs, and 0.5 ms would hide it."""
DURATION_BUCKETS_S = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
RATE_BUCKETS = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0, 20000.0)

PER_TOKEN_SAMPLE = 64
"""Per-token histograms record one value in this many: the 1st, 65th, 129th… of each series.

One SDK record costs 4 to 11 µs (more than a token's whole trip through a runner); at
50,000 tokens/s one in 8 still cost a runner a tenth of its core. A fixed stride keeps
the distribution unbiased and the counts exact to predict: ``ceil(n / PER_TOKEN_SAMPLE)``
of n values; a stream of 50 tokens/s still gives a value every 1.3 s.
:data:`runner_tokens` still counts every token.
"""

HISTOGRAM_BUCKETS: dict[str, tuple[float, ...]] = {
    "sluice.runner.ttft": LATENCY_BUCKETS_S,
    "sluice.runner.inter_token": LATENCY_BUCKETS_S,
    "sluice.runner.tokens_per_s": RATE_BUCKETS,
    "sluice.runner.stream_duration": DURATION_BUCKETS_S,
    "sluice.streamer.first_frame": LATENCY_BUCKETS_S,
    "sluice.streamer.delivery_lag": LATENCY_BUCKETS_S,
    "sluice.cancel_to_stop": LATENCY_BUCKETS_S,
    "sluice.coordinator.queue_wait": LATENCY_BUCKETS_S,
    "sluice.streamer.continuation_stall": LATENCY_BUCKETS_S,
    "sluice.token.hop": HOP_BUCKETS_S,
}

_meter = metrics.get_meter("sluice")

streams_submitted = _meter.create_counter(
    "sluice.streams.submitted", description="Streams admitted"
)
streams_finished = _meter.create_counter(
    "sluice.streams.finished",
    description="Streams ended, by final status and reason (finish reason or error type)",
)
http_errors = _meter.create_counter(
    "sluice.http.errors", description="Error answers, by service, error type and class (4xx/5xx)"
)

runner_ttft = _meter.create_histogram(
    "sluice.runner.ttft", unit="s", description="Start of generation to first token (model side)"
)
runner_inter_token = _meter.create_histogram(
    "sluice.runner.inter_token",
    unit="s",
    description=f"Time between consecutive tokens (one gap in {PER_TOKEN_SAMPLE} per stream)",
)
runner_tokens_per_s = _meter.create_histogram(
    "sluice.runner.tokens_per_s", description="Tokens per second of each finished stream"
)
runner_stream_duration = _meter.create_histogram(
    "sluice.runner.stream_duration", unit="s", description="Start of generation to its end"
)


class Level:
    """A current value that an observable instrument reads when metrics are collected."""

    def __init__(self) -> None:
        self.value: float = 0

    def observe(self, _: metrics.CallbackOptions) -> list[metrics.Observation]:
        return [metrics.Observation(self.value)]


class Total(Level):
    """A running count for an observable counter.

    Adding is an integer increment, where a synchronous counter's ``add`` costs ~10 µs
    in the SDK: a runner adds once per log commit, a thousand times a second.
    """

    def add(self, amount: int) -> None:
        self.value += amount


runner_tokens = Total()
_meter.create_observable_counter(
    "sluice.runner.tokens", callbacks=[runner_tokens.observe], description="Tokens generated"
)
runner_flush_window = Level()
_meter.create_observable_gauge(
    "sluice.runner.flush_window",
    callbacks=[runner_flush_window.observe],
    unit="s",
    description="The runner's flush window: SLUICE_RUNNER_FLUSH_MS, wider while it runs late",
)
runner_slots_in_use = _meter.create_up_down_counter(
    "sluice.runner.slots_in_use", description="Generations in flight"
)
runner_slots_total = _meter.create_up_down_counter(
    "sluice.runner.slots_total", description="Generation slots configured"
)
runner_lost = _meter.create_counter(
    "sluice.runner.lost", description="Streams failed because their runner vanished"
)
cancel_to_stop = _meter.create_histogram(
    "sluice.cancel_to_stop", unit="s", description="Cancel requested to generation stopped"
)
model_usage = _meter.create_counter(
    "sluice.model.usage_tokens",
    description="Tokens the model reported using, by model and kind: prompt, completion, reasoning",
)
tokens_wasted = _meter.create_counter(
    "sluice.tokens.wasted", description="Tokens no one needed: after_cancel, unread"
)
continuations = _meter.create_counter(
    "sluice.continuations",
    description="Answers moved to another runner mid-way, by cause: handoff (SIGTERM), lost",
)
tokens_recomputed = _meter.create_counter(
    "sluice.tokens.recomputed",
    description="Tokens a continuation generated again because the log already had them",
)
continuation_stall = _meter.create_histogram(
    "sluice.streamer.continuation_stall",
    unit="s",
    description="Last token before an answer moved to the first token after, as readers saw it",
)

token_hop = _meter.create_histogram(
    "sluice.token.hop",
    unit="s",
    description=(
        "Time since the model emitted a token, at each hop of its way: committed (taken into"
        " a log commit), logged, published, received (by a streamer), written (to a client);"
        f" tokens numbered {PER_TOKEN_SAMPLE}, {2 * PER_TOKEN_SAMPLE}... of each stream"
    ),
)
HOPS = ("committed", "logged", "published", "received", "written")
HOP_ATTRIBUTES = {hop: {"hop": hop} for hop in HOPS}

streamer_open_connections = _meter.create_up_down_counter(
    "sluice.streamer.open_connections", description="Open SSE streams"
)
streamer_first_frame = _meter.create_histogram(
    "sluice.streamer.first_frame", unit="s", description="Connect to first token frame written"
)
streamer_delivery_lag = _meter.create_histogram(
    "sluice.streamer.delivery_lag",
    unit="s",
    description=(
        f"Token frame written minus the runner's emit stamp (one frame in {PER_TOKEN_SAMPLE}"
        " per connection)"
    ),
)
streamer_disconnects = _meter.create_counter(
    "sluice.streamer.disconnects", description="Streams closed early, by reason"
)
streamer_resumes = _meter.create_counter(
    "sluice.streamer.resumes", description="Connections that resumed with Last-Event-ID"
)

coordinator_queue_depth = _meter.create_up_down_counter(
    "sluice.coordinator.queue_depth", description="Streams waiting for a runner slot"
)
coordinator_queue_wait = _meter.create_histogram(
    "sluice.coordinator.queue_wait", unit="s", description="Admission to start on a runner"
)
coordinator_rejections = _meter.create_counter(
    "sluice.coordinator.rejections", description="Submissions refused, by reason"
)
runners_alive = _meter.create_up_down_counter(
    "sluice.runners.alive", description="Runners whose heartbeats are current"
)


ZEROED: dict[str, list[tuple[metrics.Counter, dict[str, str]]]] = {
    "coordinator": [
        (runner_lost, {}),
        *((continuations, {"cause": cause}) for cause in ("handoff", "lost")),
        (coordinator_rejections, {"reason": "overloaded"}),
        (coordinator_rejections, {"reason": "rate_limited"}),
    ],
    "runner": [
        (tokens_wasted, {"kind": "unread"}),
        (tokens_wasted, {"kind": "after_cancel"}),
        (tokens_recomputed, {}),
    ],
    "streamer": [
        (streamer_resumes, {}),
        *((streamer_disconnects, {"reason": r}) for r in ("client_gone", "slow_consumer")),
    ],
}


def sampled(index: int) -> bool:
    """Whether the ``index``-th value of a per-token series (counting from 0) is recorded."""
    return index % PER_TOKEN_SAMPLE == 0


def hop_sampled(first: int, count: int) -> bool:
    """Whether tokens ``first``..``first + count - 1`` hold one whose hops are recorded.

    Chosen by token number, so every process records the same tokens' hops and the
    figures of one hop can be set against the next; from the 64th on, so that short
    answers (one record costs as much as a token's whole trip) pay nothing.
    """
    return count > 0 and (first + count - 1) // PER_TOKEN_SAMPLE != (first - 1) // PER_TOKEN_SAMPLE


def record_hop(hop: str, emitted_ns: int, now_ns: int) -> None:
    token_hop.record(max(0, now_ns - emitted_ns) / 1e9, HOP_ATTRIBUTES[hop])


def zero_counters(service: str) -> None:
    """Start ``service``'s alerting counters at 0 rather than at their first increment.

    Prometheus's ``increase()`` cannot count a series' first sample as a rise, so without
    this the first runner lost after a coordinator restart would never fire its alert.
    """
    for counter, labels in ZEROED.get(service, []):
        counter.add(0, labels)
