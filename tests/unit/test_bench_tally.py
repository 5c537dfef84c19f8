"""The benchmark's per-stream tally: delivery and schedule lag per token, frames of any size."""

from __future__ import annotations

from libs.common import sse
from libs.tools.bench.latency import Sample, Tally

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
