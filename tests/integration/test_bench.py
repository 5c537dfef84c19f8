"""The benchmark's own commands run end to end and report what they measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from libs.tools.servers import child_env


def bench_printing(tmp_path: Path, *argv: str) -> tuple[dict[str, Any], str]:
    """The figures ``--json`` wrote, and what the run printed."""
    out = tmp_path / "figures.json"
    command = [sys.executable, "-m", "libs.tools.cli", "bench", *argv, "--json", str(out)]
    finished = subprocess.run(command, env=child_env({}), capture_output=True, timeout=120)
    assert finished.returncode == 0, finished.stderr.decode()[-2000:]
    return dict(json.loads(out.read_text())), finished.stdout.decode()


def bench(tmp_path: Path, *argv: str) -> dict[str, Any]:
    return bench_printing(tmp_path, *argv)[0]


@pytest.mark.slow
def test_bench_latency_starts_its_own_suite_and_delivers_every_token(tmp_path: Path) -> None:
    figures, printed = bench_printing(
        tmp_path,
        "latency",
        "--streams",
        "5",
        "--tokens",
        "64",
        "--tokens-per-s",
        "200",
        "--ramp-s",
        "0",
    )  # 64 tokens: a stream's hops are recorded from its 64th token on
    assert figures["tokens_delivered"] == figures["tokens_expected"] == 320
    assert figures["errors"] == {}
    delivery = figures["delivery_ms"]
    assert isinstance(delivery, dict) and delivery["n"] == 320 and delivery["p50"] > 0
    assert isinstance(figures["client_cpu"], float) and figures["client_cpu"] >= 0  # 10 ms ticks
    ledger = figures["ledger"]
    assert ledger["streams_opened"] == 5 and ledger["tokens_generated"] == 320
    per_stream = ledger["per_stream"]
    assert per_stream["nats_messages_in"] > 0 and per_stream["nats_messages_out"] > 0
    assert per_stream["redis_commands"] > 0
    assert per_stream["cpu_ms"] >= 0 and ledger["per_token"]["cpu_us"] >= 0  # 10 ms ticks
    assert set(ledger["cpu_ms"]) == {
        "nats",
        "redis",
        "coordinator",
        "runner",
        "streamer",
        "gateway",
    }
    hops = ledger["token_hops_ms"]
    assert list(hops) == ["committed", "logged", "published", "received", "written"]
    assert all(hop["n"] > 0 and 0 < hop["p50"] <= hop["p99"] for hop in hops.values())
    # the runner records its three hops of the same tokens in turn; a streamer writes a
    # token only once it has been logged
    assert hops["committed"]["p50"] <= hops["logged"]["p50"] <= hops["published"]["p50"]
    assert hops["written"]["p50"] >= hops["committed"]["p50"]
    assert "cost per stream opened (5 streams): " in printed
    assert "cost per token generated (320 tokens): " in printed
    hop_lines = [text.split()[0] for text in printed.splitlines() if "  n=" in text]
    assert hop_lines == list(hops)


FLOOR_RUN = ("--streams", "4", "--tokens", "25", "--tokens-per-s", "200", "--ramp-s", "0")


@pytest.mark.slow
def test_bench_floor_serves_the_same_frames_without_a_suite(tmp_path: Path) -> None:
    figures = bench(tmp_path, "floor", *FLOOR_RUN)
    assert figures["tokens_delivered"] == 100 and figures["errors"] == {}
    delivery, cpu = figures["delivery_ms"], figures["cpu"]
    assert isinstance(delivery, dict) and delivery["n"] == 100 and delivery["p50"] >= 0
    assert isinstance(cpu, dict) and set(cpu) == {"server", "clients"}
    assert all(share >= 0 for share in cpu.values())  # CPU time comes in 10 ms ticks


PRIMITIVES = {
    "pacing": {"client"},
    "http_post": {"client", "peer"},
    "http_post_keepalive": {"client", "peer"},
    "sse_get": {"client", "peer"},
    "nats_request": {"client", "peer", "server"},
    "nats_publish": {"client", "peer", "server"},
    "nats_publish_batched": {"client", "peer", "server"},
    "nats_sub_unsub": {"client", "server"},
    "redis_hset": {"client", "server"},
    "redis_evalsha": {"client", "server"},
    "redis_sequential": {"client", "server"},
    "redis_pipelined": {"client", "server"},
}


@pytest.mark.slow
def test_bench_primitives_reports_each_building_blocks_cpu_for_every_party(
    tmp_path: Path,
) -> None:
    figures = bench(tmp_path, "primitives", "--ops", "50")
    rows = figures["rows"]
    assert isinstance(rows, list)
    assert {row["key"]: set(row["us_per_op"]) for row in rows} == PRIMITIVES
    for row in rows:
        assert row["ops"] == (64 if row["key"] == "nats_publish_batched" else 50), row
        assert all(us > 0 for us in row["us_per_op"].values()), row
        assert row["total_us"] == pytest.approx(sum(row["us_per_op"].values()))


@pytest.mark.slow
def test_bench_floor_through_log_and_bus_logs_every_token_before_relaying_it(
    tmp_path: Path,
) -> None:
    figures = bench(tmp_path, "floor", "--through", "log,bus", "--workers", "1", *FLOOR_RUN)
    assert figures["through"] == "log,bus" and figures["errors"] == {}
    assert figures["tokens_delivered"] == 100
    assert figures["logged"] == 100  # read back from Redis (XLEN) before it stopped
    delivery, cpu = figures["delivery_ms"], figures["cpu"]
    assert isinstance(delivery, dict) and delivery["n"] == 100 and delivery["p50"] > 0
    assert figures["schedule_lag_ms"]["n"] == 100
    assert isinstance(cpu, dict) and set(cpu) == {"emitter", "relay", "nats", "redis", "clients"}
    assert all(share >= 0 for share in cpu.values())


@pytest.mark.slow
def test_bench_upstream_compares_the_direct_route_with_sluice(tmp_path: Path) -> None:
    figures = bench(
        tmp_path,
        "upstream",
        "--streams",
        "2",
        "--rounds",
        "1",
        "--tokens",
        "10",
        "--interval-ms",
        "5",
    )
    assert figures["incomplete_streams"] == 0
    for route in ("direct", "sluice"):
        assert figures[f"{route}_token_latency_ms"]["n"] == 20
        assert figures[f"{route}_ttft_ms"]["n"] == 2


CAPACITY_RUN = ("--tokens", "150", "--tokens-per-s", "100", "--ramp-s", "0", "--step", "2")


@pytest.mark.slow
def test_bench_capacity_finds_the_most_streams_within_the_bound(tmp_path: Path) -> None:
    figures = bench(
        tmp_path,
        "capacity",
        "--floor",
        "--low",
        "2",
        "--high",
        "6",
        "--p99-ms",
        "10000",
        *CAPACITY_RUN,
    )
    assert figures["target"] == "floor" and figures["capacity_streams"] == 6
    trials = figures["trials"]
    assert isinstance(trials, list) and [t["streams"] for t in trials] == [2, 6]
    for trial in trials:
        assert trial["within"] and trial["errors"] == {}
        assert trial["tokens_delivered"] == trial["streams"] * 150
        assert trial["steady_lag_ms"]["n"] > 0  # 0.5 s of the 1.5 s run is steady state
        assert trial["steady_machine_busy"] > 0


@pytest.mark.slow
def test_bench_capacity_says_when_not_even_the_fewest_streams_are_within(tmp_path: Path) -> None:
    figures = bench(tmp_path, "capacity", "--low", "2", "--high", "6", "--p99-ms=-1", *CAPACITY_RUN)
    assert figures["target"] == "suite" and figures["capacity_streams"] == 0
    trials = figures["trials"]
    assert isinstance(trials, list) and len(trials) == 1
    assert trials[0]["streams"] == 2 and not trials[0]["within"]
    assert trials[0]["tokens_delivered"] == 300 and trials[0]["errors"] == {}


@pytest.mark.slow
def test_bench_failover_measures_the_stall_at_a_handoff_and_at_a_kill(tmp_path: Path) -> None:
    figures = bench(
        tmp_path,
        "failover",
        *("--streams", "9", "--tokens", "800", "--tokens-per-s", "100", "--settle-s", "1.5"),
    )
    assert figures["streams_exact"] == 9 and figures["faults"] == {}, figures
    handoff, kill, recomputed = (
        figures["handoff_stall_ms"],
        figures["kill_stall_ms"],
        figures["recomputed_per_continuation"],
    )
    assert isinstance(handoff, dict) and isinstance(kill, dict) and isinstance(recomputed, dict)
    assert handoff["n"] > 0 and kill["n"] > 0 and recomputed["n"] == handoff["n"] + kill["n"]
    assert kill["p50"] > handoff["p50"], "a kill waits for the runner to be declared lost"
    exits = figures["sigterm_exit_s"]
    assert isinstance(exits, list) and exits[0] < 10, "the runner handed over instead of draining"


@pytest.mark.slow
def test_bench_network_measures_each_design_behind_a_profile_and_draws_its_gaps(
    tmp_path: Path,
) -> None:
    figures = bench(
        tmp_path,
        "network",
        *("--profiles", "3g", "--flush", "token,adaptive", "--streams", "2"),
        *("--tokens", "30", "--plots", str(tmp_path / "plots")),
    )
    cells = figures["cells"]
    assert isinstance(cells, list) and len(cells) == 6
    for cell in cells:
        assert cell["completed"] == cell["streams"] == 2, cell
        assert (cell["lost"], cell["duplicated"], cell["text_mismatches"]) == (0, 0, 0)
        assert cell["first_token_ms_p50"] > 300 + 300, "the model's 300 ms and one 3G RTT"
    plots = sorted(path.name for path in (tmp_path / "plots").iterdir())
    assert plots == ["gaps-by-design.png", "gaps-by-flush.png"]
