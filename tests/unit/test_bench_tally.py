"""The benchmark's per-stream tally: delivery and schedule lag per token, frames of any size,
and the steady state: which tokens it counts and how busy the machine was."""

from __future__ import annotations

import argparse
import os
import time

from libs.common import sse
from libs.tools.bench.latency import (
    SETTLE_S,
    Sample,
    SteadyState,
    Tally,
    steady_window,
    wait_until,
)
from libs.tools.bench.usage import MachineBusy

MS = 1_000_000


def token(last: int, count: int, ts_ms: int) -> sse.Event:
    frame = sse.token_frame(last, ["x"] * count, ts_ms * MS)
    (event,) = sse.SSEParser().feed(frame)
    return event


def test_delivery_and_lag_per_token_for_single_and_coalesced_frames() -> None:
    sample = Sample()
    tally = Tally(sample, started_ns=0, tokens_per_s=50)  # a token due every 20 ms
    tally.on_event(sse.Event("status", '{"status":"running"}', ""), 5 * MS)
    tally.on_event(token(1, 1, ts_ms=100), 103 * MS)  # token 1 due at 100 ms: the origin
    tally.on_event(token(2, 1, ts_ms=121), 125 * MS)  # due at 120
    tally.on_event(token(5, 3, ts_ms=141), 190 * MS)  # tokens 3, 4, 5 due at 140, 160, 180
    assert sample.status_ms == [5.0]
    assert sample.ttft_ms == [103.0]
    assert sample.delivery_ms == [3.0, 4.0, 49.0, 49.0, 49.0]
    assert sample.lag_ms == [3.0, 5.0, 50.0, 30.0, 10.0]
    assert sample.tokens == 5


def test_the_steady_state_counts_frames_whose_first_token_falls_due_inside_its_window() -> None:
    sample = Sample()
    tally = Tally(sample, started_ns=0, tokens_per_s=50, steady=(150 * MS, 200 * MS))
    tally.on_event(token(1, 1, ts_ms=100), 103 * MS)  # due at 100: before the window
    tally.on_event(token(2, 1, ts_ms=121), 125 * MS)  # due at 120: before
    tally.on_event(token(5, 3, ts_ms=141), 190 * MS)  # first due at 140: the frame is before
    tally.on_event(token(6, 1, ts_ms=200), 204 * MS)  # due at 200: the window's end is open
    tally.on_event(token(8, 2, ts_ms=241), 250 * MS)  # due at 220 and 240: after
    assert sample.steady_lag_ms == []
    tally.steady_from = 100 * MS
    tally.on_event(token(10, 2, ts_ms=281), 290 * MS)  # due at 260 and 280: after
    tally.steady_from, tally.steady_until = 270 * MS, 400 * MS
    tally.on_event(token(12, 2, ts_ms=321), 330 * MS)  # due at 300 and 320: inside
    tally.on_event(token(13, 1, ts_ms=341), 361 * MS)  # due at 340: inside
    assert sample.steady_lag_ms == [30.0, 10.0, 21.0]
    assert sample.lag_ms[-3:] == sample.steady_lag_ms


def test_the_steady_window_runs_from_the_last_first_token_to_the_first_last_one() -> None:
    window = steady_window(started_ns=10 * 10**9, ramp_s=5, first_token_s=0.05, run_s=20)
    assert window == (int(16.05 * 10**9), int(30.05 * 10**9))
    assert SETTLE_S == 1.0  # the second after the ramp that the window leaves out


def test_every_client_process_waits_for_the_same_instant() -> None:
    assert wait_until(time.time_ns() - 10**9) == 0.0  # already past: start now
    assert 0.9 < wait_until(time.time_ns() + 10**9) <= 1.0


def test_client_processes_take_turns_one_stream_apart() -> None:
    steady = SteadyState(ramp_s=5, first_token_s=0.05, run_s=20)
    args = argparse.Namespace(ramp_s=5, streams=1000)  # a stream every 5 ms overall
    assert steady.begin_of(0, args) == steady.begin_ns
    assert steady.begin_of(1, args) == steady.begin_ns + 5 * MS
    assert steady.window == steady_window(steady.begin_ns, 5, 0.05, 20)


def test_machine_busy_sees_a_spinning_thread_over_its_window() -> None:
    start = time.time_ns() + 50 * MS
    busy = MachineBusy(start, start + 400 * MS)
    busy.start()
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # one core spinning, so at least part of one is busy
        pass
    busy.join(timeout=2)
    assert busy.share is not None and busy.stolen is not None
    assert 0.2 < busy.share <= (os.cpu_count() or 1) + 0.1
    assert 0 <= busy.stolen <= (os.cpu_count() or 1)


def test_machine_busy_reports_nothing_before_its_window_closes() -> None:
    start = time.time_ns() + 60 * 10**9
    busy = MachineBusy(start, start + MS)
    busy.start()
    assert busy.share is None and busy.stolen is None
