"""The benchmark's cost ledger: what the services and servers count, between two readings,
per stream opened, per token generated, and at each hop of a token's way."""

from __future__ import annotations

import math

import pytest

from libs.common.metrics import HOPS
from libs.common.stats import Buckets
from libs.tools.bench.ledger import (
    Costs,
    Sources,
    Tally,
    hops,
    per,
    redis_commands,
    role,
    service_counts,
)

BOUNDS = [0.001, 0.002, 0.004, math.inf]
SOURCES = Sources(services=[], pids={}, nats_monitor_ports=[1], redis_ports=[2])


def cumulative(*counts: float) -> Buckets:
    return Buckets(BOUNDS, list(counts))


def test_hop_quantiles_come_from_bucket_deltas_summed_over_instances() -> None:
    before = {
        "runner-a": {"committed": cumulative(10, 10, 10, 10)},
        "runner-b": {"committed": cumulative(0, 5, 5, 5)},
    }
    after = {
        # a: 10 more in (1, 2] ms; b: 10 more in (1, 2] ms; what came before is left out
        "runner-a": {"committed": cumulative(10, 20, 20, 20), "logged": cumulative(0, 0, 20, 20)},
        "runner-b": {"committed": cumulative(0, 15, 15, 15)},
        "streamer": {"written": cumulative(0, 0, 0, 4)},  # new since before: all of it counts
    }
    found = {hop.name: hop for hop in hops(before, after)}
    assert [hop.name for hop in hops(before, after)] == list(HOPS)
    committed, logged = found["committed"], found["logged"]
    assert committed.n == 20
    assert committed.p50_ms == pytest.approx(1.5)  # rank 10 of 20 in (1, 2] ms
    assert committed.p99_ms == pytest.approx(1.99)
    assert committed.p50_over_previous_ms is None
    assert logged.n == 20 and logged.p50_ms == pytest.approx(3.0)  # rank 10 of 20 in (2, 4]
    assert logged.p50_over_previous_ms == pytest.approx(1.5)
    assert found["published"].n == 0 and found["published"].p50_ms is None
    received = found["received"]
    assert received.p50_over_previous_ms is None  # nothing to take it from
    assert found["written"].n == 4 and found["written"].p50_ms == pytest.approx(4.0)
    assert found["written"].p50_over_previous_ms is None  # received had none


def test_per_stream_and_per_token_divide_the_run_totals() -> None:
    before = Tally(streams=3, tokens=100, hops={}, nats_msgs=(50, 60), redis_commands=1000)
    after = Tally(streams=13, tokens=1100, hops={}, nats_msgs=(250, 310), redis_commands=1900)
    costs = Costs.between(
        before,
        after,
        cpu_before={"runner": 1.0, "runner-77": 2.0, "gateway": 0.5, "nats": 0.1, "gone": 9.0},
        cpu_after={"runner": 1.02, "runner-77": 2.03, "gateway": 0.56, "nats": 0.11, "new": 5.0},
        sources=SOURCES,
    )
    assert costs.streams == 10 and costs.tokens == 1000
    assert costs.cpu_s == pytest.approx({"runner": 0.05, "gateway": 0.06, "nats": 0.01})
    stream = costs.per_stream()
    assert stream["cpu_ms"] == pytest.approx(12.0)
    assert list(stream["cpu_ms_by_process"]) == ["gateway", "runner", "nats"]  # costliest first
    assert stream["cpu_ms_by_process"]["runner"] == pytest.approx(5.0)
    assert stream["nats_messages_in"] == 20 and stream["nats_messages_out"] == 25
    assert stream["redis_commands"] == 90
    token = costs.per_token()
    assert token["cpu_us"] == pytest.approx(120.0)
    assert token["data_path_cpu_us"] == pytest.approx(60.0)  # runner and nats, not the gateway
    text = "\n".join(costs.lines())
    assert "cost per stream opened (10 streams): 12.0 ms of suite CPU (gateway 6.0," in text
    assert "NATS 20.0 messages in, 25.0 out; Redis 90.0 commands" in text
    assert "summed over" not in text


def test_what_was_not_counted_is_said_to_be_unknown_not_zero() -> None:
    nothing = Tally(streams=0, tokens=0, hops={}, nats_msgs=None, redis_commands=None)
    cluster = Sources(services=[], pids={}, nats_monitor_ports=[1, 2, 3], redis_ports=[4] * 6)
    costs = Costs.between(nothing, nothing, {"redis": 1.0}, {"redis": 1.0}, cluster)
    assert per(5.0, 0) is None and per(None, 3) is None and per(6.0, 3) == 2.0
    assert costs.per_stream()["cpu_ms"] is None and costs.per_token()["cpu_us"] is None
    assert costs.figures()["nats_messages"] is None
    text = "\n".join(costs.lines())
    assert "NATS n/a messages in, n/a out; Redis n/a commands" in text
    assert "summed over 3 nodes and Redis over 6" in text
    assert text.count("n/a / n/a") == len(HOPS)


def test_commandstats_calls_summed_but_the_ledgers_own_info() -> None:
    text = (
        "# Commandstats\r\n"
        "cmdstat_xadd:calls=120,usec=900,usec_per_call=7.50,rejected_calls=0,failed_calls=0\r\n"
        "cmdstat_info:calls=7,usec=300,usec_per_call=42.86,rejected_calls=0,failed_calls=0\r\n"
        "cmdstat_client|setinfo:calls=4,usec=8,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n"
        "cmdstat_evalsha:calls=30,usec=600,usec_per_call=20.00,rejected_calls=1,failed_calls=2\r\n"
    )
    assert redis_commands(text) == 154
    assert redis_commands("# Commandstats\r\n") == 0


def test_service_counts_read_a_services_metrics() -> None:
    text = "\n".join(
        [
            "# HELP sluice_streams_submitted_total Streams admitted",
            "# TYPE sluice_streams_submitted_total counter",
            'sluice_streams_submitted_total{model="sim"} 4.0',
            'sluice_streams_submitted_total{model="other"} 3.0',
            "# HELP sluice_token_hop_seconds Time since the model emitted a token",
            "# TYPE sluice_token_hop_seconds histogram",
            'sluice_token_hop_seconds_bucket{hop="committed",le="0.001"} 1.0',
            'sluice_token_hop_seconds_bucket{hop="committed",le="+Inf"} 2.0',
            'sluice_token_hop_seconds_count{hop="committed"} 2.0',
            'sluice_token_hop_seconds_sum{hop="committed"} 0.004',
            'sluice_token_hop_seconds_bucket{hop="logged",le="0.001"} 0.0',
            'sluice_token_hop_seconds_bucket{hop="logged",le="+Inf"} 2.0',
            'sluice_token_hop_seconds_count{hop="logged"} 2.0',
            'sluice_token_hop_seconds_sum{hop="logged"} 0.006',
            "",
        ]
    )
    streams, tokens, hop_counts = service_counts(text)
    assert streams == 7 and tokens == 0
    assert hop_counts == {
        "committed": Buckets([0.001, math.inf], [1.0, 2.0]),
        "logged": Buckets([0.001, math.inf], [0.0, 2.0]),
    }


def test_replicas_and_nodes_count_as_their_role() -> None:
    assert role("runner") == role("runner-4242") == "runner"
    assert role("nats-17") == "nats"
